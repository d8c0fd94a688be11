"""What this CPU can do for inference: native bf16, int8 dot-product (VNNI) instructions, and the vector level the
kernels run at.

The SubCell runtime (:mod:`locscope.pipelines.embed_runtime`) chooses its default from this: bf16 autocast only where
the CPU computes bf16 natively (AVX512-BF16 / AMX-BF16; elsewhere it is emulated and several times slower than fp32),
and int8 quantized with 7-bit weights where there is no VNNI (the AVX2 / AVX-512 int8 kernels without VNNI add pairs of
products in saturating 16-bit registers, which full 8-bit weights can overflow).

Sources: the ``flags`` line of ``/proc/cpuinfo`` (Linux), else torch's own CPU checks; the instruction level torch's
kernels use (``torch.backends.cpu.get_cpu_capability()``, which ``ATEN_CPU_CAPABILITY`` can hold lower) and oneDNN's
``ONEDNN_MAX_CPU_ISA`` (read by the oneDNN in torch and in OpenVINO) cap what counts as available, so a run held to
AVX2 kernels is treated as an AVX2 CPU.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
_AVX512_ONLY = ("avx512", "amx")  # flag prefixes that need AVX-512 kernels

# oneDNN's ONEDNN_MAX_CPU_ISA values -> the flags of ours they still allow (None: no cap)
_ONEDNN_CAPS: dict[str, tuple[str, ...] | None] = {
    "ALL": None, "DEFAULT": None,
    "AVX512_CORE_AMX_FP16": None, "AVX512_CORE_AMX": None, "AVX10_1_512_AMX_FP16": None, "AVX10_1_512_AMX": None,
    "AVX512_CORE_FP16": ("avx512_bf16", "avx512_vnni", "avx_vnni"), "AVX10_1_512": ("avx512_bf16", "avx512_vnni",
                                                                                     "avx_vnni"),
    "AVX512_CORE_BF16": ("avx512_bf16", "avx512_vnni", "avx_vnni"),
    "AVX512_CORE_VNNI": ("avx512_vnni", "avx_vnni"),
    "AVX2_VNNI_2": ("avx_vnni",), "AVX2_VNNI": ("avx_vnni",),
}


@dataclass(frozen=True)
class CpuCapability:
    """What the CPU offers the inference kernels (recorded in ``embeddings.h5ad``'s ``uns["inference"]``).

    Attributes
    ----------
    model : str
        The CPU's model name (``/proc/cpuinfo``), else ``platform.processor()``.
    isa : str
        The vector level of torch's kernels (``torch.backends.cpu.get_cpu_capability()``: ``AVX512``, ``AVX2``, ...).
    native_bf16 : bool
        bf16 arithmetic in hardware (AVX512-BF16 or AMX-BF16) and usable at ``isa``.
    vnni : bool
        int8 dot-product instructions (AVX512-VNNI, AVX-VNNI or AMX-INT8) usable at ``isa``.
    flags : tuple of str
        The usable flags of :data:`NATIVE_BF16_FLAGS` + :data:`VNNI_FLAGS`.
    threads : int
        torch's intra-op threads.
    """

    model: str
    isa: str
    native_bf16: bool
    vnni: bool
    flags: tuple[str, ...] = ()
    threads: int = 1

    def describe(self) -> str:
        """One line, e.g. ``AMD EPYC, torch AVX2 kernels, bf16 emulated, no VNNI, 2 threads``."""
        return (f"{self.model}, torch {self.isa} kernels, bf16 {'native' if self.native_bf16 else 'emulated'}, "
                f"{'VNNI' if self.vnni else 'no VNNI'}, {self.threads} thread{'s' if self.threads != 1 else ''}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "flags": list(self.flags)}

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> "CpuCapability":
        """The inverse of :meth:`to_dict` (e.g. from ``uns["inference"]``)."""
        return cls(**{**fields, "flags": tuple(fields.get("flags", ()))})


def _cpuinfo() -> tuple[str, set[str]] | None:
    """(model name, flags) of the first processor in ``/proc/cpuinfo``; None where there is no such file."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return model, flags


def _torch_flags() -> set[str]:
    """The flags torch's own CPU checks report (any OS; private helpers, so each is optional)."""
    checks = {"avx512_bf16": "_is_avx512_bf16_supported", "amx_bf16": "_is_amx_tile_supported",
              "amx_int8": "_is_amx_tile_supported", "avx512_vnni": "_is_vnni_supported"}
    found = set()
    for flag, name in checks.items():
        check = getattr(torch.cpu, name, None)
        try:
            if check is not None and check():
                found.add(flag)
        except RuntimeError:
            pass
    return found


def usable_flags(flags: set[str], isa: str, onednn_max_isa: str | None) -> tuple[str, ...]:
    """The bf16 / VNNI flags in ``flags`` that kernels at torch level ``isa`` under ``ONEDNN_MAX_CPU_ISA`` can use."""
    wanted = [f for f in (*NATIVE_BF16_FLAGS, *VNNI_FLAGS) if f in flags]
    if not isa.upper().startswith("AVX512"):
        wanted = [f for f in wanted if not f.startswith(_AVX512_ONLY)]
    if onednn_max_isa:
        allowed = _ONEDNN_CAPS.get(onednn_max_isa.strip().upper(), ())
        if allowed is not None:
            wanted = [f for f in wanted if f in allowed]
    return tuple(wanted)


def detect_cpu_capability() -> CpuCapability:
    """This machine's :class:`CpuCapability` (see the module docstring for the sources)."""
    isa = torch.backends.cpu.get_cpu_capability()
    info = _cpuinfo()
    model, flags = info if info is not None and info[1] else ((info or ("", set()))[0], _torch_flags())
    usable = usable_flags(flags, isa, os.environ.get("ONEDNN_MAX_CPU_ISA"))
    return CpuCapability(model=model or platform.processor() or platform.machine() or "unknown CPU", isa=isa,
                         native_bf16=any(f in usable for f in NATIVE_BF16_FLAGS),
                         vnni=any(f in usable for f in VNNI_FLAGS), flags=usable, threads=torch.get_num_threads())


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells, e.g. a container's share), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def machine_description() -> str:
    """The line a benchmark prints first: the CPU (:meth:`CpuCapability.describe`, threads = torch's now), its
    cores and the load average (other jobs on a shared machine slow wall-clock timings)."""
    text = f"CPU: {detect_cpu_capability().describe()}; {os.cpu_count()} cores"
    if hasattr(os, "getloadavg"):
        text += f", load average {os.getloadavg()[0]:.1f}"
    return text


__all__ = ["CpuCapability", "NATIVE_BF16_FLAGS", "VNNI_FLAGS", "available_cores", "detect_cpu_capability",
           "machine_description", "usable_flags"]
