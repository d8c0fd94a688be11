"""Input conversion shared by the metrics: numpy or torch in, float64 numpy batches out."""

from __future__ import annotations

from typing import Any

import numpy as np


def to_numpy(array: Any, dtype: type | None = np.float64) -> np.ndarray:
    """Return ``array`` (numpy array, torch tensor or nested sequence) as a numpy array.

    Parameters
    ----------
    array : array_like or torch.Tensor
        Any array; torch tensors are detached and moved to the CPU.
    dtype : numpy dtype or None, default float64
        Target dtype (``None`` keeps the source dtype).
    """
    if hasattr(array, "detach") and hasattr(array, "cpu"):  # torch.Tensor without importing torch
        array = array.detach().cpu().numpy()
    out = np.asarray(array)
    return out if dtype is None else out.astype(dtype, copy=False)


def as_image_batch(images: Any, name: str = "image", dtype: type | None = np.float64) -> tuple[np.ndarray, bool]:
    """Return ``images`` as ``(B, H, W)`` plus whether the input was a single ``(H, W)`` image.

    Raises
    ------
    ValueError
        If the array is not 2-D or 3-D.
    """
    arr = to_numpy(images, dtype)
    if arr.ndim == 2:
        return arr[None], True
    if arr.ndim == 3:
        return arr, False
    raise ValueError(f"{name}: expected an image (H, W) or a batch (B, H, W), got shape {arr.shape}")


def check_same_shape(a: np.ndarray, b: np.ndarray, names: tuple[str, str] = ("real", "generated")) -> None:
    """Raise ``ValueError`` naming both arguments when their shapes differ."""
    if a.shape != b.shape:
        raise ValueError(f"{names[0]} and {names[1]} must have the same shape, got {a.shape} and {b.shape}")


def unbatch(values: np.ndarray, single: bool) -> np.ndarray | float:
    """Return a Python float for a single image, else the per-image array."""
    return float(values[0]) if single else values
