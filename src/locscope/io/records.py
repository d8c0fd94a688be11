"""The record type every image reader returns, and the checks the readers share.

The readers (``io/images.py``, ``io/landmarks.py``, ``io/opencell.py``) import from here; this module imports no reader.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from locscope import channels as ch
from locscope.errors import InputError


@dataclass
class ImageRecord:
    """One field of view or cell crop as a reader sees it.

    Attributes
    ----------
    path : Path
        The file (or, for a grouped record, the folder / ``{folder}/{id}`` prefix) it came from.
    format : str
        Reader that produced it: ``"hpa-display-rgb"``, ``"hpa-composite-rgb"``, ``"hpa-channel"``,
        ``"hpa-fov"``, ``"celldiff-sample"``, ``"png"``, ``"jpeg"``, ``"tiff"``, ``"ome-tiff"``,
        ``"micromanager-tiff"``, ``"landmark-stack"`` or ``"cytoself-npy"``.
    channels : dict of str to ndarray
        Canonical channel name -> ``(H, W)`` array, source dtype kept.
    pixel_size_nm : float or None
        Pixel size in nanometres when the file states it.
    metadata : dict
        Reader-specific facts (source dtype, axes, how channels were identified, z-slices projected, ...).
    """

    path: Path
    format: str
    channels: dict[str, np.ndarray]
    pixel_size_nm: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of the channels (all channels share it)."""
        first = next(iter(self.channels.values()))
        return tuple(first.shape)  # type: ignore[return-value]

    @property
    def dtype(self) -> np.dtype:
        """Source dtype of the first channel."""
        return next(iter(self.channels.values())).dtype

    def stack(self, order: Sequence[str]) -> np.ndarray:
        """Return the named channels as a ``(C, H, W)`` array; missing channels are zeros."""
        planes = [self.channels.get(name, np.zeros(self.shape, self.dtype)) for name in order]
        return np.stack(planes, axis=0)


def check_file(path: str | Path, expected: str = "an image file") -> Path:
    """Return ``path`` as a Path; ``InputError`` if it is missing, a directory, or empty."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected {expected}")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file")
    return path


def name_channels(path: Path, n_channels: int, channel_order: Sequence[str] | None) -> list[str] | None:
    """Validate and canonicalise a user ``channel_order`` against the number of channels found."""
    if channel_order is None:
        return None
    names = []
    for name in channel_order:
        try:
            names.append(ch.canonical_channel(name))
        except ValueError as err:
            raise InputError(f"{path}: channel_order: {err}") from None
    if len(names) != n_channels:
        raise InputError(
            f"{path}: wrong channel count: the file has {n_channels} channel(s) but channel_order names "
            f"{len(names)} ({', '.join(names)})"
        )
    if len(set(names)) != len(names):
        raise InputError(f"{path}: channel_order names a channel twice ({', '.join(names)})")
    return names


def value_range(array: np.ndarray) -> tuple[float, float]:
    """``(min, max)`` of an array as floats, ignoring NaN (``(nan, nan)`` when all values are NaN)."""
    array = np.asarray(array)
    if array.size == 0 or (array.dtype.kind == "f" and np.isnan(array).all()):
        return (float("nan"), float("nan"))
    return (float(np.nanmin(array)), float(np.nanmax(array)))


__all__ = ["ImageRecord", "check_file", "name_channels", "value_range"]
