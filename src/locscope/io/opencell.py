"""OpenCell readers: raw MicroManager z-stacks and cytoself-style ``.npy`` crop stacks.

Raw OpenCell fields of view are MicroManager multipage TIFFs, one page per (channel, z-slice), each page carrying a
``MicroManagerMetadata`` tag. Channels are identified per page from that tag: the enabled laser line (405 nm ->
Hoechst -> ``nucleus``, 488 nm -> mNeonGreen -> ``protein``, as in the OpenCell pipeline) or, in standard
MicroManager files, the ``Channel`` name (``DAPI``, ``GFP``, ...). Each channel's z-slices are max-projected.

cytoself-style crops (Kobayashi et al. 2022) are ``.npy`` arrays ``(N, 100, 100)`` per channel named
``{prefix}_{pro,nuc,nucdist}.npy`` or ``(N, H, W, k)`` with the channels last; labels sit beside them as
``{prefix}_label.npy`` (string arrays only: object arrays need unpickling and are refused) or ``{prefix}_label.csv``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from locscope import channels as ch
from locscope.errors import InputError
from locscope.io.records import ImageRecord, check_file, name_channels

# Excitation laser line (nm) -> canonical channel, for OpenCell's two-colour imaging (Hoechst 33342, mNeonGreen).
LASER_CHANNELS: dict[int, str] = {405: ch.NUCLEUS, 488: ch.PROTEIN}
_LASER_KEY = re.compile(r"Laser (\d{3})-Power Enable$")
# cytoself file-name suffixes -> canonical channel ("gfp" in older releases).
CYTOSELF_SUFFIXES: dict[str, str] = {"pro": ch.PROTEIN, "gfp": ch.PROTEIN, "nuc": ch.NUCLEUS}
# cytoself's default channel_list order for a stacked (N, H, W, 2) array.
CYTOSELF_DEFAULT_ORDER: tuple[str, ...] = (ch.PROTEIN, ch.NUCLEUS)


# ---------------------------------------------------------------- MicroManager z-stacks


def _page_metadata(page: Any) -> dict | None:
    tag = page.tags.get("MicroManagerMetadata")
    return tag.value if tag is not None and isinstance(tag.value, dict) else None


def _page_channel(meta: dict) -> tuple[str, str] | None:
    """``(channel key, description)`` of one page: the enabled laser line, else the ``Channel`` name."""
    lasers = [int(m.group(1)) for key, value in meta.items()
              if (m := _LASER_KEY.search(key)) and str(value).strip().lower() == "on"]
    if len(lasers) == 1:
        return (f"laser-{lasers[0]}", f"{lasers[0]} nm laser")
    name = meta.get("Channel")
    if isinstance(name, str) and name:
        return (f"name-{name}", f"channel {name!r}")
    return None


def has_micromanager_channels(tif: Any) -> bool:
    """True when the first page of an open ``tifffile.TiffFile`` carries MicroManager channel metadata."""
    meta = _page_metadata(tif.pages[0])
    return meta is not None and _page_channel(meta) is not None


def read_micromanager_tiff(path: str | Path, channel_order: Sequence[str] | None = None) -> ImageRecord:
    """Read a raw MicroManager multipage TIFF (channels x z), identify channels, max-project z.

    Parameters
    ----------
    path : path
        MicroManager TIFF (OpenCell raw field of view: Hoechst + mNeonGreen, ~51 z-slices).
    channel_order : sequence of str, optional
        Names for the channels in order of first appearance, overriding the metadata.

    Returns
    -------
    ImageRecord
        ``format="micromanager-tiff"``; one ``(H, W)`` max-projection per channel in the source dtype (uint16);
        ``metadata`` holds the per-channel z-slice count, laser / exposure and the page indices used.

    Raises
    ------
    InputError
        Pages without MicroManager metadata, an unidentified laser line, unequal z counts, a truncated file.
    """
    import tifffile

    path = check_file(path)
    planes: dict[str, list[tuple[int, np.ndarray]]] = {}
    described: dict[str, dict[str, Any]] = {}
    pixel_size_nm = None
    try:
        with tifffile.TiffFile(path) as tif:
            for index, page in enumerate(tif.pages):
                meta = _page_metadata(page)
                identified = _page_channel(meta) if meta is not None else None
                if identified is None:
                    raise InputError(f"{path}: page {index}: no MicroManager channel metadata (laser line or Channel)")
                key, description = identified
                slice_index = int(meta.get("SliceIndex", len(planes.get(key, []))))
                planes.setdefault(key, []).append((slice_index, page.asarray()))
                described.setdefault(key, {"identified_by": description, "first_page": index,
                                           "exposure_ms": _float_or_none(_find(meta, "Exposure"))})
                if pixel_size_nm is None and _float_or_none(meta.get("PixelSizeUm")):
                    pixel_size_nm = float(meta["PixelSizeUm"]) * 1000.0
    except InputError:
        raise
    except Exception:
        raise InputError(f"{path}: truncated or corrupt TIFF file") from None
    keys = list(planes)
    names = name_channels(path, len(keys), channel_order)
    if names is None:
        names = [_channel_from_key(path, key) for key in keys]
    z_counts = {key: len(planes[key]) for key in keys}
    if len(set(z_counts.values())) != 1:
        raise InputError(f"{path}: channels have different z-slice counts {z_counts}")
    channels: dict[str, np.ndarray] = {}
    for key, name in zip(keys, names):
        if name in channels:
            raise InputError(f"{path}: two channels identified as '{name}'; pass channel_order")
        stack = np.stack([plane for _, plane in sorted(planes[key], key=lambda item: item[0])])  # (Z, H, W)
        channels[name] = stack.max(axis=0)  # z max-projection
        described[key]["channel"] = name
        described[key]["z_slices"] = int(stack.shape[0])
    metadata = {"source_dtype": str(next(iter(channels.values())).dtype), "z_projection": "max",
                "source_shape": [len(keys), z_counts[keys[0]], *next(iter(channels.values())).shape],
                "channels_found": list(described.values())}
    return ImageRecord(path, "micromanager-tiff", channels, pixel_size_nm=pixel_size_nm, metadata=metadata)


def _find(meta: dict, suffix: str) -> Any:
    for key, value in meta.items():
        if key.endswith(suffix):
            return value
    return None


def _float_or_none(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _channel_from_key(path: Path, key: str) -> str:
    kind, _, value = key.partition("-")
    if kind == "laser":
        if int(value) in LASER_CHANNELS:
            return LASER_CHANNELS[int(value)]
        raise InputError(f"{path}: {value} nm laser channel has no known stain; pass channel_order")
    try:
        return ch.canonical_channel(value)
    except ValueError:
        raise InputError(f"{path}: MicroManager channel {value!r} not recognised; pass channel_order") from None


# ---------------------------------------------------------------- cytoself .npy crops


@dataclass
class CropStack:
    """cytoself-style crops of one file set.

    Attributes
    ----------
    path : Path
        The image ``.npy`` read first.
    images : ndarray, shape (N, H, W, k)
        Crops, channels last (memory-mapped where possible; source dtype kept).
    channels : tuple of str
        Canonical name of each of the ``k`` channels.
    labels : list of dict or None
        One dict per crop from ``{prefix}_label.csv`` (columns as in the file) or ``{prefix}_label.npy``
        (columns ``col0``, ``col1``, ...).
    extra : dict
        Other arrays of the set, e.g. ``{"nucdist": (N, H, W)}`` nuclear distance maps.
    """

    path: Path
    images: np.ndarray
    channels: tuple[str, ...]
    labels: list[dict[str, Any]] | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def record(self, index: int) -> ImageRecord:
        """Crop ``index`` as an :class:`ImageRecord` (``format="cytoself-npy"``)."""
        if not -len(self) <= index < len(self):
            raise InputError(f"{self.path}: crop index {index} out of range (file holds {len(self)} crops)")
        index = index % len(self)
        planes = {name: self.images[index, :, :, i] for i, name in enumerate(self.channels)}
        meta: dict[str, Any] = {"index": index, "n_crops": len(self), "source_dtype": str(self.images.dtype),
                                "source_shape": list(self.images.shape)}
        if self.labels is not None:
            meta["label"] = self.labels[index]
        return ImageRecord(self.path, "cytoself-npy", planes, metadata=meta)

    def records(self) -> list[ImageRecord]:
        """Every crop as an :class:`ImageRecord`."""
        return [self.record(i) for i in range(len(self))]


def _load_npy(path: Path) -> np.ndarray:
    path = check_file(path)
    with open(path, "rb") as handle:
        if not handle.read(6) == b"\x93NUMPY":  # np.load would otherwise try to unpickle it
            raise InputError(f"{path}: not an NPY file (no NUMPY signature)")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as err:
        if "pickle" in str(err) or "Python objects" in str(err):
            raise InputError(f"{path}: holds Python objects (pickled); refusing to unpickle, save labels as CSV") from None
        raise InputError(f"{path}: truncated or corrupt NPY file") from None
    except Exception:
        raise InputError(f"{path}: truncated or corrupt NPY file") from None


def _prefix_suffix(path: Path) -> tuple[str, str | None]:
    stem = path.name[: -len(".npy")] if path.name.endswith(".npy") else path.stem
    prefix, _, suffix = stem.rpartition("_")
    return (prefix, suffix.lower()) if prefix else (stem, None)


def read_cytoself_crops(path: str | Path, channel_order: Sequence[str] | None = None) -> CropStack:
    """Read a cytoself-style crop set from one of its ``.npy`` files.

    Parameters
    ----------
    path : path
        ``{prefix}_pro.npy`` / ``{prefix}_nuc.npy`` ``(N, H, W)`` (siblings with the other suffixes are read too),
        or any ``.npy`` of shape ``(N, H, W, k)``.
    channel_order : sequence of str, optional
        Names of the ``k`` channels of a ``(N, H, W, k)`` array; default: cytoself's ``(protein, nucleus)`` for
        ``k = 2``, the suffix's channel for ``k = 1``; other ``k`` need it.

    Returns
    -------
    CropStack

    Raises
    ------
    InputError
        Empty / truncated / pickled file, wrong channel count, sibling files with another crop count or size.
    """
    path = Path(path)
    array = _load_npy(path)
    prefix, suffix = _prefix_suffix(path)
    extra: dict[str, np.ndarray] = {}
    if array.ndim == 3 and suffix in CYTOSELF_SUFFIXES and channel_order is None:
        # per-channel files: gather the siblings {prefix}_{pro,nuc}.npy in cytoself's order
        found: dict[str, np.ndarray] = {}
        for sibling_suffix in ("pro", "gfp", "nuc"):
            sibling = path.with_name(f"{prefix}_{sibling_suffix}.npy")
            if sibling.exists() and CYTOSELF_SUFFIXES[sibling_suffix] not in found:
                data = array if sibling == path else _load_npy(sibling)
                if data.shape != array.shape:
                    raise InputError(f"{sibling}: shape {data.shape} differs from {path} {array.shape}")
                found[CYTOSELF_SUFFIXES[sibling_suffix]] = data
        names = tuple(found)
        images = np.stack([found[n] for n in names], axis=-1)  # (N, H, W, k)
        nucdist = path.with_name(f"{prefix}_nucdist.npy")
        if nucdist.exists():
            extra["nucdist"] = _load_npy(nucdist)
    elif array.ndim in (3, 4):
        images = array[..., None] if array.ndim == 3 else array
        k = images.shape[-1]
        names_list = name_channels(path, k, channel_order)
        if names_list is None:
            if k == 2:
                names_list = list(CYTOSELF_DEFAULT_ORDER)
            elif k == 1 and suffix in CYTOSELF_SUFFIXES:
                names_list = [CYTOSELF_SUFFIXES[suffix]]
            else:
                raise InputError(f"{path}: wrong channel count: {k} channel(s) in shape {array.shape} and no "
                                 "channel_order; cytoself crops have 2 (protein, nucleus)")
        names = tuple(names_list)
    else:
        raise InputError(f"{path}: shape {array.shape} is not a crop stack (N, H, W) or (N, H, W, k)")
    if images.shape[0] == 0:
        raise InputError(f"{path}: holds no crops (shape {array.shape})")
    labels = _read_crop_labels(path.with_name(f"{prefix}_label.csv"), path.with_name(f"{prefix}_label.npy"),
                               len(images))
    return CropStack(path, images, names, labels, extra)


def _read_crop_labels(csv_path: Path, npy_path: Path, n: int) -> list[dict[str, Any]] | None:
    if csv_path.exists():
        import pandas as pd

        check_file(csv_path)
        table = pd.read_csv(csv_path)
        rows = table.to_dict(orient="records")
    elif npy_path.exists():
        array = _load_npy(npy_path)
        array = array.reshape(len(array), -1) if array.ndim != 2 else array
        rows = [{f"col{j}": (v.item() if hasattr(v, "item") else v) for j, v in enumerate(row)} for row in array]
    else:
        return None
    source = csv_path if csv_path.exists() else npy_path
    if len(rows) != n:
        raise InputError(f"{source}: {len(rows)} label rows for {n} crops")
    return rows


def read_cytoself_record(path: str | Path, index: int | None = None,
                         channel_order: Sequence[str] | None = None) -> ImageRecord:
    """One crop of a cytoself ``.npy`` set; ``index`` is required when the file holds more than one crop."""
    stack = read_cytoself_crops(path, channel_order=channel_order)
    if index is None:
        if len(stack) != 1:
            raise InputError(f"{path}: holds {len(stack)} crops; pass index= (or use read_images / read_cytoself_crops)")
        index = 0
    return stack.record(index)
