"""How ``locscope embed`` runs SubCell: the default ``auto`` mode (verified OpenVINO int8 on the CPU) and its cache.

The ``auto`` mode picks the fastest way to run the ViT whose embeddings this run's own cells confirm:

1. On the CPU, for a cell size with at least ``calibration_cells + verification_cells`` cells in the calibration
   sample (cells spread over a CSV or store input, else the first cells of the run), the ViT + pooling is converted
   to OpenVINO and its ViT quantized statically to int8 with NNCF, calibrated on ``calibration_cells`` of them (or
   read back from the cache, see below).
2. The int8 model and PyTorch fp32 embed the other ``verification_cells`` (every ninth sample cell by default);
   the int8 model is used only if every one of their embeddings has cosine similarity >= ``VERIFY_COSINE`` (0.999)
   to fp32. A cached model that fails is recalibrated on this run's cells and verified again.
3. Otherwise (GPU, a CPU without VNNI, too few cells, verification failed): PyTorch, in the fastest precision exact
   enough on this
   device (:func:`runtime_choice`): bf16 autocast on GPUs and on CPUs that compute bf16 natively (AVX512-BF16 /
   AMX-BF16), fp32 on CPUs where bf16 would be emulated (several times slower than fp32 there, slower than SubCell's
   own fp32 default).

The CPU's capability (:func:`~locscope.utils.cpu.detect_cpu_capability`, recorded with each mode) also decides
whether int8 is tried (only with VNNI / AMX int8 instructions: without them it was no faster than fp32) and how int8
is made: weights on 7 bits in every layer where the CPU has no VNNI (``--backend openvino --precision int8``: its
int8 kernels would overflow 16-bit sums of full-range 8-bit products), and OpenVINO's non-quantized ops in bf16 only
where bf16 is native.

Cache: a calibrated int8 ViT is written (atomically) as OpenVINO IR (``vit.xml`` + ``vit.bin``, no pickle, and a
``manifest.json`` of their SHA-256 digests, checked before reading) under
``$LOCSCOPE_CACHE_DIR`` (default ``$XDG_CACHE_HOME/locscope`` or ``~/.cache/locscope``) ``/openvino/<key>/``, the key
hashing the ViT's weights, the cell size and channels, the calibration size and the OpenVINO / NNCF versions; the next
run of the same model at the same size skips the calibration (verification still runs on its own cells).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from locscope.models.subcell import OpenVINOSubCell, SubCellModel, convert_openvino
from locscope.utils.atomic import atomic_path
from locscope.utils.cpu import CpuCapability, detect_cpu_capability
from locscope.utils.openvino_support import import_nncf, import_openvino

VERIFY_COSINE = 0.999  # minimum embedding cosine similarity to fp32 for the int8 model to be used


@dataclass
class InferenceMode:
    """How the cells of one size were run (saved in ``embeddings.h5ad``'s ``uns["inference"]``).

    Attributes
    ----------
    image_size : list of int
        ``[H, W]`` of the cells (after ``--image-size``).
    backend, precision : str
        ``torch`` / ``openvino``; ``fp32`` / ``bf16`` / ``int8``.
    reason : str
        Why this mode (for ``auto``: which check chose it).
    calibration : str
        For OpenVINO int8: ``this run (N cells[ spread over the input])`` or ``cache`` (default mode),
        ``first cells (N)`` / ``cells spread over the input (N)`` (``--backend openvino --precision int8``); empty
        otherwise.
    verified_min_cosine : float or None
        For verified int8: the lowest cosine similarity to fp32 over the verification cells.
    verified_cells : int
        Number of verification cells.
    cells : int
        Number of cells run this way.
    cpu : dict
        The CPU's capability the choice was made for (:meth:`~locscope.utils.cpu.CpuCapability.to_dict`; empty off
        the CPU).
    """

    image_size: list[int]
    backend: str
    precision: str
    reason: str = ""
    calibration: str = ""
    verified_min_cosine: float | None = None
    verified_cells: int = 0
    cells: int = 0
    cpu: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """One line for the console."""
        text = f"{self.image_size[0]}x{self.image_size[1]} cells: {self.backend} {self.precision}"
        if self.calibration:
            text += f", int8 calibration: {self.calibration}"
        if self.verified_min_cosine is not None:
            text += (f", verified on {self.verified_cells} cells (min cosine to fp32 "
                     f"{self.verified_min_cosine:.5f})")
        return text + (f" [{self.reason}]" if self.reason else "")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RuntimeChoice:
    """What the device's capability decides for the ``auto`` mode (:func:`runtime_choice`).

    Attributes
    ----------
    fallback : str
        The PyTorch precision when int8 is not used: ``bf16`` (autocast) or ``fp32``.
    why : str
        Why that precision, for the mode's ``reason``.
    seven_bit_weights : bool
        Quantize int8 weights on 7 bits in every layer (no VNNI; for ``--backend openvino --precision int8``).
    int8_float : str
        OpenVINO's precision for the non-quantized ops of the int8 model: ``bf16`` or ``fp32``.
    int8 : bool
        Try verified int8 at all: only with int8 dot-product instructions (VNNI / AMX). Without them OpenVINO's
        int8 ViT-B/16 ran no faster than PyTorch fp32 (1.78 vs 1.77 CPU s / image at 448 px with the kernels held
        to AVX2) and missed the check (min cosine 0.9984-0.9985), so calibrating it would cost minutes for nothing.
    """

    fallback: str
    why: str
    seven_bit_weights: bool
    int8_float: str
    int8: bool = True


def cpu_capability() -> CpuCapability:
    """This CPU's capability (:func:`~locscope.utils.cpu.detect_cpu_capability`; tests replace this function)."""
    return detect_cpu_capability()


def runtime_choice(device_type: str, cpu: CpuCapability | None) -> RuntimeChoice:
    """The ``auto`` mode's choices on ``device_type`` (``cpu``: decided by ``cpu``'s capability).

    bf16 autocast is the fallback only where bf16 is native (GPUs; CPUs with AVX512-BF16 / AMX-BF16: ~2x fp32 there);
    where it is emulated it runs several times slower than fp32 (9x SubCell's own fp32 default on an AVX2 CPU), so
    fp32 is used. Without VNNI, int8 is not tried (no faster than fp32 there) and, asked for explicitly, its weights
    are quantized on 7 bits.
    """
    if device_type != "cpu" or cpu is None:
        return RuntimeChoice("bf16", f"bf16 on {device_type}", False, "bf16", False)
    if cpu.native_bf16:
        return RuntimeChoice("bf16", "bf16 native on this CPU", not cpu.vnni, "bf16", cpu.vnni)
    return RuntimeChoice("fp32", "bf16 emulated on this CPU", not cpu.vnni, "fp32", cpu.vnni)


def openvino_available() -> bool:
    """True when ``openvino`` and ``nncf`` import (dependencies of locscope; a trimmed install may lack them)."""
    try:
        import_openvino()
        import_nncf()
    except ImportError:
        return False
    return True


def cache_root() -> Path:
    """``$LOCSCOPE_CACHE_DIR``, else ``$XDG_CACHE_HOME/locscope``, else ``~/.cache/locscope`` (the temp folder's
    ``locscope-cache`` when there is no home directory)."""
    if os.environ.get("LOCSCOPE_CACHE_DIR"):
        return Path(os.environ["LOCSCOPE_CACHE_DIR"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "locscope"
    try:
        return Path.home() / ".cache" / "locscope"
    except RuntimeError:  # no HOME and no passwd entry (some containers)
        import tempfile

        return Path(tempfile.gettempdir()) / "locscope-cache"


def int8_cache_key(model: SubCellModel, image_size: Sequence[int], calibration_cells: int,
                   seven_bit_weights: bool = False) -> str:
    """A hex key for a calibrated int8 ViT: hashes the ViT's and pooling's weights (names, shapes, dtypes, values),
    the cell size, the channel variant, the calibration size, the weight bits and the OpenVINO / NNCF versions."""
    nncf, openvino = import_nncf(), import_openvino()
    digest = hashlib.sha256()
    header = {"size": list(image_size), "channels": model.config.channels, "calibration_cells": calibration_cells,
              "openvino": openvino.__version__, "nncf": nncf.__version__, "format": 2}  # 2: ViT + pooling
    if seven_bit_weights:
        header["weight_bits"] = 7
    digest.update(json.dumps(header, sort_keys=True).encode())
    weights = {**{f"encoder.{k}": v for k, v in model.encoder.state_dict().items()},
               **{f"pool_model.{k}": v for k, v in model.pool_model.state_dict().items()}}
    for name, tensor in weights.items():
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:32]


def _file_digests(folder: Path) -> dict[str, str]:
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in ("vit.xml", "vit.bin")}


def read_cached_int8(key: str) -> Any | None:
    """The cached int8 ``openvino.Model`` for ``key``, or None when absent or damaged (``manifest.json``'s digests of
    ``vit.xml`` / ``vit.bin`` do not match): the caller then recalibrates."""
    ov = import_openvino()

    folder = cache_root() / "openvino" / key
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        if manifest.get("sha256") != _file_digests(folder):
            return None
        return ov.Core().read_model(folder / "vit.xml", folder / "vit.bin")
    except (OSError, ValueError, RuntimeError):
        return None


def write_cached_int8(key: str, ov_model: Any, info: dict[str, Any] | None = None) -> None:
    """Save ``ov_model`` under ``key`` atomically (a temp folder renamed into place) with a ``manifest.json`` of the
    files' digests and ``info`` (what was calibrated, for ``locscope cache``). A cache that cannot be written
    (read-only home, full disk) is skipped: it only saves time."""
    ov = import_openvino()

    try:
        with atomic_path(cache_root() / "openvino" / key) as tmp:
            tmp.mkdir(parents=True)
            ov.save_model(ov_model, tmp / "vit.xml", compress_to_fp16=False)
            manifest = {**(info or {}), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "sha256": _file_digests(tmp)}
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    except OSError:
        pass


def cache_entries() -> list[dict[str, Any]]:
    """The cached int8 models: one dict per entry (``key``, ``path``, ``bytes`` and the manifest's fields)."""
    folder = cache_root() / "openvino"
    entries = []
    for entry in sorted(folder.iterdir()) if folder.is_dir() else []:
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        try:
            manifest = json.loads((entry / "manifest.json").read_text())
        except (OSError, ValueError):
            manifest = {"damaged": True}
        manifest.pop("sha256", None)
        size = sum(f.stat().st_size for f in entry.iterdir() if f.is_file())
        entries.append({"key": entry.name, "path": str(entry), "bytes": size, **manifest})
    return entries


def clear_cache() -> int:
    """Delete every cached int8 model; returns the number of bytes freed."""
    import shutil

    folder = cache_root() / "openvino"
    freed = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.is_dir() else 0
    shutil.rmtree(folder, ignore_errors=True)
    return freed


def verification_mask(n_cells: int, verification_cells: int) -> torch.Tensor:
    """``(n_cells,)`` bool: the ``verification_cells`` check cells, spread over the sample (every k-th, k =
    ``n_cells // verification_cells``); the rest calibrate."""
    every = n_cells // verification_cells
    mask = torch.zeros(n_cells, dtype=torch.bool)
    mask[every - 1::every][:verification_cells] = True
    return mask


def _min_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a.float(), b.float(), dim=1).min().item()


def verified_int8(model: SubCellModel, calibration: torch.Tensor, verification: torch.Tensor,
                  calibration_cells: int, use_cache: bool = True,
                  log: Callable[[str], None] | None = None,
                  sample_note: str = "", choice: RuntimeChoice | None = None,
                  cpu: CpuCapability | None = None) -> tuple[OpenVINOSubCell | None, InferenceMode]:
    """An OpenVINO int8 ViT for ``calibration``'s cell size whose embeddings of ``verification`` are within
    :data:`VERIFY_COSINE` of PyTorch fp32, or None when no calibration passes.

    Parameters
    ----------
    model : SubCellModel
        On the CPU, in eval mode.
    calibration, verification : torch.Tensor
        ``(N, C, H, W)`` and ``(M, C, H, W)`` normalised cells of one size, disjoint.
    calibration_cells : int
        The nominal calibration size (part of the cache key).
    use_cache : bool
        Read and write the cache.
    log : callable, optional
        Called with a one-line message before each slow step (calibration, check).
    sample_note : str
        Appended to the calibration label, e.g. ``" spread over the input"``.
    choice, cpu : RuntimeChoice, CpuCapability, optional
        How to quantize and what to fall back to (default: :func:`runtime_choice` for :func:`cpu_capability`).

    Returns
    -------
    (OpenVINOSubCell or None, InferenceMode)
        The mode says what was tried and the cosine measured; when no int8 model passes, it is the PyTorch
        fallback (``choice.fallback``) and its reason says why.
    """
    if choice is None:
        cpu = cpu or cpu_capability()
        choice = runtime_choice("cpu", cpu)
    cpu_dict = cpu.to_dict() if cpu is not None else {}
    size = list(verification.shape[2:])
    size_text = f"{size[0]}x{size[1]}"
    log = log or (lambda message: None)
    key = int8_cache_key(model, size, calibration_cells, choice.seven_bit_weights) if use_cache else ""
    attempts = ([("cache", read_cached_int8(key))] if use_cache else []) + [("this run", None)]
    reference, cosine = None, float("nan")
    for source, ov_model in attempts:
        if source == "cache" and ov_model is None:
            continue
        if ov_model is None:
            where = f" (once per model and cell size: cached under {cache_root()})" if use_cache else ""
            bits = ", 7-bit weights: no VNNI" if choice.seven_bit_weights else ""
            log(f"calibrating OpenVINO int8 on {len(calibration)} cells of {size_text}{bits}{where}")
            ov_model = convert_openvino(model, calibration, "int8", seven_bit_weights=choice.seven_bit_weights)
        runner = OpenVINOSubCell.from_openvino_model(model, ov_model, size, "int8", int8_float=choice.int8_float)
        log(f"checking the int8 model ({source}) against fp32 on {len(verification)} cells")
        if reference is None:
            with torch.inference_mode():
                reference = model(verification).embedding
        cosine = _min_cosine(runner(verification).embedding, reference)
        if cosine >= VERIFY_COSINE:
            if source == "this run" and use_cache:
                write_cached_int8(key, ov_model, {"image_size": size, "channels": model.config.channels,
                                                  "hidden_size": model.config.hidden_size,
                                                  "layers": model.config.num_hidden_layers,
                                                  "calibration_cells": len(calibration), "min_cosine": cosine,
                                                  "weight_bits": 7 if choice.seven_bit_weights else 8})
            calibration_text = "cache" if source == "cache" else f"this run ({len(calibration)} cells{sample_note})"
            return runner, InferenceMode(size, "openvino", "int8", "auto: int8 verified", calibration_text,
                                         cosine, len(verification), cpu=cpu_dict)
        log(f"the int8 model ({source}) reached min cosine {cosine:.5f} < {VERIFY_COSINE}")
    return None, InferenceMode(size, "torch", choice.fallback, f"auto: int8 failed verification (min cosine "
                                                              f"{cosine:.5f} < {VERIFY_COSINE}); {choice.why}",
                               verified_min_cosine=cosine, verified_cells=len(verification), cpu=cpu_dict)


__all__ = [
    "InferenceMode", "RuntimeChoice", "VERIFY_COSINE", "cache_entries", "cache_root", "clear_cache", "cpu_capability",
    "int8_cache_key", "openvino_available", "read_cached_int8", "runtime_choice", "verification_mask",
    "verified_int8", "write_cached_int8",
]
