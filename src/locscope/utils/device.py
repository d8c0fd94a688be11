"""Device selection: ``--device auto|cpu|cuda``."""

from __future__ import annotations

from typing import Literal

import torch

from locscope.errors import InputError

DeviceName = Literal["auto", "cpu", "cuda"]


def resolve_device(device: str = "auto") -> torch.device:
    """Map ``'auto'`` to CUDA when available, else CPU; validate explicit choices.

    Raises
    ------
    InputError
        For an unknown name, or ``'cuda'`` on a machine without a CUDA device.
    """
    name = device.lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"--device {device}: no CUDA device is available on this machine; use --device cpu or auto")
        return torch.device(name)
    raise InputError(f"--device {device!r}: accepted values are auto, cpu, cuda")


def autocast_dtype(device: torch.device) -> torch.dtype:
    """bf16 on both CPU (AMX) and CUDA; callers decide whether to autocast at all."""
    return torch.bfloat16
