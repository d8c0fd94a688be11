"""Image readers: PNG / JPEG / TIFF / OME-TIFF, HPA files, CELL-Diff sample folders, and the dispatcher.

Every reader returns an :class:`ImageRecord`: canonical channel name -> ``(H, W)`` array in the source dtype
(``uint8``, ``uint16`` or ``float32``); nothing is rescaled. :func:`read_image` picks the reader from the file's
signature (not its extension) and, for TIFFs, from its metadata; :func:`read_images` also groups the files of one
field of view (HPA ``{id}_{red,green,blue,yellow}`` quadruples, CELL-Diff ``nucleus.png`` / ``ER.png`` /
``microtubule.png`` / ``protein.png`` folders) into one record.

Channel rules (also in README "Reading data"):

1. ``channel_order`` given: it names the channels in file order; a different count is an error.
2. HPA channel files ``{id}_{red,green,blue,yellow}.{png,jpg,tif}``: red -> microtubules, green -> protein,
   blue -> nucleus, yellow -> ER (a colour file stored as RGB keeps the plane of its colour).
3. HPA display-colour RGB (one stain shown in its colour): red only -> microtubules, blue only -> nucleus,
   R = G with B empty (yellow) -> ER, green only -> protein, grey (R = G = B) -> the channel the file name says
   (``nucleus.png``, ``ER.png``, ``microtubule.png``, ``protein.png``, ``*_dapi.tif``, ...), otherwise protein.
   A file name that contradicts a non-grey colour is an error.
4. RGB / RGBY images mixing colours are HPA composites: R, G, B, (Y) -> microtubules, protein, nucleus, (ER).
5. TIFF axes come from tifffile's series axes: ``C`` / ``S`` (or a single unnamed ``Q`` / ``I`` axis) is the
   channel axis; ``Z`` is max-projected; ``T`` longer than 1 is refused. OME channel names are used when present.
   Float ``H x W x 3`` / ``H x W x 4`` stacks are landmark stacks (ProtiCelli order, see :mod:`locscope.io.landmarks`).
6. One grey plane with no name hint is the protein channel.

Every command reads images through :func:`read_image` / :func:`read_images` (``embed`` / ``classify`` too, via
:func:`read_single_channel` for SubCell path lists), so every command accepts and refuses the same files: NaN / Inf
pixels are refused naming channel and position; images above :func:`max_pixels` (default 16384 x 16384, environment
``LOCSCOPE_MAX_PIXELS``) are refused from their header, before any pixel is decoded; 8/16-bit depth is kept.
"""

from __future__ import annotations

import logging
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from locscope import channels as ch
from locscope.errors import InputError
from locscope.io.records import ImageRecord, check_file, name_channels, value_range

# tifffile logs warnings for trimmed MicroManager headers; the reader reports what it needs itself.
logging.getLogger("tifffile").setLevel(logging.ERROR)

HPA_COLOURS: dict[str, str] = {"red": ch.MICROTUBULES, "green": ch.PROTEIN, "blue": ch.NUCLEUS, "yellow": ch.ER}
HPA_COMPOSITE_ORDER: tuple[str, ...] = (ch.MICROTUBULES, ch.PROTEIN, ch.NUCLEUS, ch.ER)
CELLDIFF_FILE_NAMES: dict[str, str] = {
    "nucleus": ch.NUCLEUS, "er": ch.ER, "microtubule": ch.MICROTUBULES, "microtubules": ch.MICROTUBULES,
    "protein": ch.PROTEIN,
}
LAYOUTS: tuple[str, ...] = ("auto", "hpa-channel", "display-rgb", "celldiff-sample", "micromanager", "landmark-stack",
                            "cytoself-npy", "generic")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".npy")
_HPA_NAME = re.compile(r"^(?P<id>.+)_(?P<colour>red|green|blue|yellow)$", re.IGNORECASE)
_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "png",
    b"\xff\xd8\xff": "jpeg",
    b"II*\x00": "tiff",
    b"MM\x00*": "tiff",
    b"II+\x00": "tiff",
    b"MM\x00+": "tiff",
    b"\x93NUMPY": "npy",
}


# ---------------------------------------------------------------- helpers shared by the readers

DEFAULT_MAX_PIXELS = 16384 * 16384
MAX_PIXELS_VARIABLE = "LOCSCOPE_MAX_PIXELS"


def max_pixels() -> int:
    """The largest image (height x width, per plane) the readers accept: ``$LOCSCOPE_MAX_PIXELS`` or 16384 x 16384."""
    text = os.environ.get(MAX_PIXELS_VARIABLE)
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise InputError(f"{MAX_PIXELS_VARIABLE}={text!r}: expected a positive number of pixels")
    return value


def image_dimensions(path: Path, kind: str) -> tuple[int, int] | None:
    """``(height, width)`` of a PNG / JPEG / TIFF / NPY file from its header (no pixel is decoded), or None."""
    try:
        if kind == "png":
            with open(path, "rb") as handle:
                header = handle.read(24)
            width, height = struct.unpack(">II", header[16:24])
            return height, width
        if kind == "jpeg":
            from PIL import Image

            with Image.open(path) as im:
                return im.size[1], im.size[0]
        if kind == "tiff":
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                axes, shape = series.axes.upper(), series.shape
                if "Y" in axes and "X" in axes:
                    return shape[axes.index("Y")], shape[axes.index("X")]
                return tuple(shape[-2:]) if len(shape) >= 2 else None  # type: ignore[return-value]
        if kind == "npy":
            shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
            return tuple(shape[-2:]) if len(shape) >= 2 else None  # type: ignore[return-value]
    except (OSError, ValueError, struct.error, IndexError):
        return None  # the reader itself reports a corrupt file
    except Exception:  # noqa: BLE001 - third-party header parsers raise their own types; the reader reports them
        return None
    return None


def check_image_size(path: Path, kind: str) -> None:
    """InputError when the file's planes exceed :func:`max_pixels` (read from the header, before decoding)."""
    dims = image_dimensions(path, kind)
    limit = max_pixels()
    if dims is not None and dims[0] * dims[1] > limit:
        raise InputError(f"{path}: {dims[1]} x {dims[0]} pixels is above the limit of {limit} pixels per image; "
                         f"crop or tile it, or raise the limit with the environment variable {MAX_PIXELS_VARIABLE}")


def check_finite(record: ImageRecord) -> ImageRecord:
    """InputError naming channel and position of the first NaN / Inf pixel of a float record; else ``record``."""
    for name, plane in record.channels.items():
        if plane.dtype.kind == "f" and not np.isfinite(plane).all():
            row, col = np.argwhere(~np.isfinite(plane))[0]
            value = plane[row, col]
            raise InputError(f"{record.path}: channel '{name}' has a non-finite value ({value}) at row {row} "
                             f"col {col}; images must hold finite numbers")
    return record


def sniff_format(path: Path) -> str:
    """Return ``"png"``, ``"jpeg"``, ``"tiff"`` or ``"npy"`` from the file's first bytes, else ``InputError``."""
    with open(path, "rb") as handle:
        head = handle.read(8)
    for signature, kind in _SIGNATURES.items():
        if head.startswith(signature):
            return kind
    raise InputError(f"{path}: not an image file (no PNG, JPEG, TIFF or NPY signature)")


def name_hint(path: Path) -> str | None:
    """Canonical channel named by a file's stem (``ER.png``) or its last ``_`` token (``cell1_dapi.tif``)."""
    stem = path.name.split(".")[0]
    for candidate in (stem, stem.rsplit("_", 1)[-1]):
        try:
            return ch.canonical_channel(candidate)
        except ValueError:
            continue
    return None


# ---------------------------------------------------------------- display colours


def display_colour(rgb: np.ndarray, lossy: bool = False) -> str | None:
    """Classify an HPA display-colour RGB image by which planes carry signal.

    Parameters
    ----------
    rgb : ndarray, shape (H, W, 3)
        Integer RGB image.
    lossy : bool
        The image was JPEG-compressed. Lossless images are compared exactly (a plane is empty when all zero,
        two planes equal when identical); JPEG bleeds colour between planes (chroma subsampling puts ~16 % of a
        yellow image's mean into blue), so there a plane is empty when its mean is at most 25 % of the brightest
        plane's mean and two planes are equal when their mean absolute difference is at most 15 % of that mean.

    Returns
    -------
    str or None
        ``"grey"``, ``"red"``, ``"green"``, ``"blue"``, ``"yellow"``, or ``None`` for a mix of colours.
    """
    red, green, blue = (rgb[..., i].astype(np.float32) for i in range(3))
    if lossy:
        brightest = max(float(red.mean()), float(green.mean()), float(blue.mean()))

        def empty(plane: np.ndarray) -> bool:
            return float(plane.mean()) <= 0.25 * brightest

        def equal(a: np.ndarray, b: np.ndarray) -> bool:
            return float(np.abs(a - b).mean()) <= 0.15 * brightest
    else:

        def empty(plane: np.ndarray) -> bool:
            return not plane.any()

        def equal(a: np.ndarray, b: np.ndarray) -> bool:
            return bool(np.array_equal(a, b))

    if equal(red, green) and equal(green, blue):
        return "grey"
    if empty(green) and empty(blue):
        return "red"
    if empty(red) and empty(blue):
        return "green"
    if empty(red) and empty(green):
        return "blue"
    if empty(blue) and equal(red, green):
        return "yellow"
    return None


_COLOUR_PLANE = {"red": 0, "green": 1, "blue": 2, "yellow": 0, "grey": 0}


def _rgb_record(path: Path, rgb: np.ndarray, kind: str, channel_order: Sequence[str] | None) -> ImageRecord:
    """Name the channels of an RGB image: display colour (one stain) or composite (rules 3 and 4)."""
    meta: dict[str, Any] = {"source_shape": list(rgb.shape), "source_dtype": str(rgb.dtype), "file_format": kind}
    if channel_order is not None:
        names = name_channels(path, 3, channel_order)
        meta["channel_source"] = "channel_order"
        return ImageRecord(path, kind, {n: rgb[..., i] for i, n in enumerate(names)}, metadata=meta)
    colour = display_colour(rgb, lossy=kind == "jpeg")
    if colour is None:
        meta["channel_source"] = "hpa composite R,G,B"
        planes = {HPA_COMPOSITE_ORDER[i]: rgb[..., i] for i in range(3)}
        return ImageRecord(path, "hpa-composite-rgb", planes, metadata=meta)
    hint = name_hint(path)
    if colour == "grey":
        channel = hint or ch.PROTEIN
        meta["channel_source"] = "file name" if hint else "grey without a name hint -> protein"
    else:
        channel = HPA_COLOURS[colour]
        if hint is not None and hint != channel:
            raise InputError(
                f"{path}: file name says '{hint}' but the display colour is {colour} ({channel}); "
                "pass channel_order to override"
            )
        meta["channel_source"] = f"display colour {colour}"
    meta["display_colour"] = colour
    return ImageRecord(path, "hpa-display-rgb", {channel: rgb[..., _COLOUR_PLANE[colour]]}, metadata=meta)


# ---------------------------------------------------------------- PNG / JPEG


def decode_png_jpeg(path: Path, kind: str) -> np.ndarray:
    """Decode a PNG or JPEG file to an array (``(H, W)`` or ``(H, W, S)``), keeping 8/16-bit depth."""
    import imagecodecs

    data = path.read_bytes()
    try:
        array = imagecodecs.png_decode(data) if kind == "png" else imagecodecs.jpeg8_decode(data)
    except Exception:  # imagecodecs raises PngError / Jpeg8Error (RuntimeError) with codec-internal wording
        raise InputError(f"{path}: truncated or corrupt {kind.upper()} file") from None
    return np.asarray(array)


def _flat_record(path: Path, array: np.ndarray, kind: str, channel_order: Sequence[str] | None) -> ImageRecord:
    """Record for a decoded 2-D or ``(H, W, S)`` PNG / JPEG / TIFF plane set."""
    meta: dict[str, Any] = {"source_shape": list(array.shape), "source_dtype": str(array.dtype), "file_format": kind}
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 3 and array.shape[-1] in (2, 4) and kind == "png":
        # grey+alpha or RGBA: an alpha plane that is fully opaque carries nothing; anything else is refused
        alpha = array[..., -1]
        if int(alpha.min()) != int(np.iinfo(array.dtype).max):
            raise InputError(f"{path}: image has a non-opaque alpha channel; save it without transparency")
        array = array[..., :-1] if array.shape[-1] == 4 else array[..., 0]
        meta["alpha"] = "dropped (opaque)"
    if array.ndim == 2:
        names = name_channels(path, 1, channel_order)
        hint = name_hint(path)
        channel = names[0] if names else (hint or ch.PROTEIN)
        meta["channel_source"] = "channel_order" if names else ("file name" if hint else "grey without a name hint -> protein")
        return ImageRecord(path, kind, {channel: array}, metadata=meta)
    if array.ndim == 3 and array.shape[-1] == 3:
        return _rgb_record(path, array, kind, channel_order)
    raise InputError(f"{path}: unsupported image shape {tuple(array.shape)}; expected (H, W) or (H, W, 3)")


# ---------------------------------------------------------------- HPA channel files


def hpa_id_colour(path: Path) -> tuple[str, str] | None:
    """``(id, colour)`` for an HPA channel file name ``{id}_{red,green,blue,yellow}.ext``, else None."""
    match = _HPA_NAME.match(path.name.split(".")[0])
    return (match["id"], match["colour"].lower()) if match else None


def read_hpa_channel(path: str | Path) -> ImageRecord:
    """Read one HPA channel file ``{id}_{red,green,blue,yellow}.{png,jpg,tif}`` (8- or 16-bit).

    Returns an :class:`ImageRecord` with one channel: red -> microtubules, green -> protein, blue -> nucleus,
    yellow -> ER. Files stored as RGB keep the plane of their colour (yellow: the red plane, equal to green).
    """
    path = check_file(path)
    id_colour = hpa_id_colour(path)
    if id_colour is None:
        raise InputError(f"{path}: not an HPA channel file name ({{id}}_{{red,green,blue,yellow}}.ext)")
    hpa_id, colour = id_colour
    kind = sniff_format(path)
    check_image_size(path, kind)
    if kind == "tiff":
        array = _tiff_plain_array(path)
    elif kind in ("png", "jpeg"):
        array = decode_png_jpeg(path, kind)
    else:
        raise InputError(f"{path}: HPA channel files must be PNG, JPEG or TIFF, got {kind.upper()}")
    meta = {"hpa_id": hpa_id, "colour": colour, "source_shape": list(array.shape), "source_dtype": str(array.dtype)}
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        plane = array[..., _COLOUR_PLANE[colour]]
    elif array.ndim == 2:
        plane = array
    else:
        raise InputError(f"{path}: unsupported HPA channel image shape {tuple(array.shape)}; expected (H, W) or (H, W, 3)")
    return ImageRecord(path, "hpa-channel", {HPA_COLOURS[colour]: plane}, metadata=meta)


# ---------------------------------------------------------------- TIFF


def _tiff_plain_array(path: Path) -> np.ndarray:
    import tifffile

    try:
        return np.asarray(tifffile.imread(path))
    except Exception:
        raise InputError(f"{path}: truncated or corrupt TIFF file") from None


def _ome_root(tif: Any) -> Any:
    """Parsed OME-XML root of an open TiffFile, or None."""
    import xml.etree.ElementTree as ET

    if not tif.is_ome or not tif.ome_metadata:
        return None
    try:
        return ET.fromstring(tif.ome_metadata)
    except ET.ParseError:
        return None


def _ome_channel_names(root: Any) -> list[str] | None:
    """Channel ``Name`` attributes of the OME image, or None."""
    if root is None:
        return None
    names = [el.get("Name") for el in root.iter() if el.tag.split("}")[-1] == "Channel"]
    return names if names and all(names) else None


def _ome_pixel_size_nm(root: Any) -> float | None:
    """``PhysicalSizeX`` of the OME image in nm, or None."""
    if root is None:
        return None
    for el in root.iter():
        if el.tag.split("}")[-1] == "Pixels" and el.get("PhysicalSizeX"):
            factor = {"nm": 1.0, "µm": 1e3, "um": 1e3, "mm": 1e6}.get(el.get("PhysicalSizeXUnit", "µm"))
            return float(el.get("PhysicalSizeX")) * factor if factor else None
    return None


def _imagej_pixel_size_nm(tif: Any) -> float | None:
    """Pixel size of an ImageJ TIFF from ``XResolution`` (pixels per unit) and the ImageJ ``unit``, or None."""
    meta = tif.imagej_metadata or {}
    factor = {"nm": 1.0, "micron": 1e3, "µm": 1e3, "um": 1e3, "\\u00B5m": 1e3, "mm": 1e6}.get(str(meta.get("unit", "")))
    tag = tif.pages[0].tags.get("XResolution")
    if factor is None or tag is None:
        return None
    numerator, denominator = tag.value
    return factor * denominator / numerator if numerator else None


def read_tiff(path: str | Path, channel_order: Sequence[str] | None = None) -> ImageRecord:
    """Read a TIFF / OME-TIFF, dispatching MicroManager stacks and float landmark stacks to their readers.

    Parameters
    ----------
    path : path
        TIFF file.
    channel_order : sequence of str, optional
        Names of the channels in file order (rule 1 of the module docstring).

    Returns
    -------
    ImageRecord
        ``format`` is ``"tiff"``, ``"ome-tiff"``, ``"micromanager-tiff"`` or ``"landmark-stack"``.
    """
    import tifffile

    path = check_file(path)
    try:
        with tifffile.TiffFile(path) as tif:
            if tif.is_micromanager:
                from locscope.io.opencell import has_micromanager_channels, read_micromanager_tiff

                if has_micromanager_channels(tif):
                    return read_micromanager_tiff(path, channel_order=channel_order)
            series = tif.series[0]
            axes, source_shape = series.axes, list(series.shape)
            array, reduced_axes, projected = _series_array(series)
            root = _ome_root(tif)
            ome_names, pixel_size_nm = _ome_channel_names(root), _ome_pixel_size_nm(root)
            if pixel_size_nm is None:
                pixel_size_nm = _imagej_pixel_size_nm(tif)
            is_ome = tif.is_ome
    except InputError:
        raise
    except Exception:
        raise InputError(f"{path}: truncated or corrupt TIFF file") from None
    kind = "ome-tiff" if is_ome else "tiff"
    meta: dict[str, Any] = {"axes": axes, "source_shape": source_shape, "source_dtype": str(array.dtype), **projected}
    array = _to_channel_first(path, array, reduced_axes, meta)
    if array.ndim == 2:
        return _named(path, kind, array[None], channel_order, ome_names, pixel_size_nm, meta)
    n_channels = array.shape[0]
    if channel_order is None and ome_names is None and array.dtype.kind == "f" and n_channels in (3, 4):
        from locscope.io.landmarks import landmark_record

        return landmark_record(path, np.moveaxis(array, 0, -1), channel_order=None, metadata=meta)
    if channel_order is None and ome_names is None and n_channels == 3 and array.dtype.kind in "ui":
        return _rgb_record(path, np.moveaxis(array, 0, -1), kind, None)
    return _named(path, kind, array, channel_order, ome_names, pixel_size_nm, meta)


def read_planes(path: str | Path) -> np.ndarray:
    """Read an image file as unnamed grey planes ``(P, H, W)`` float32 (brightfield stacks, one plane per file).

    TIFF series follow the same axis rules as :func:`read_tiff` (time points refused, z max-projected, the one non-YX
    axis = planes) but the planes are not given channel names; PNG / JPEG must be grey (an RGB file whose three
    colours are equal counts as one grey plane).

    Raises
    ------
    InputError
        Missing, empty, corrupt or colour files; unsupported shapes.
    """
    path = check_file(path)
    kind = sniff_format(path)
    check_image_size(path, kind)  # the limit every reader applies, before decoding
    if kind == "tiff":
        import tifffile

        try:
            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                axes, array = series.axes, series.asarray()
        except Exception:
            raise InputError(f"{path}: truncated or corrupt TIFF file") from None
        if axes.upper().endswith("S") and array.shape[-1] in (3, 4):  # an RGB(A) TIFF: samples last
            array = np.moveaxis(array, -1, 0)
            axes = "C" + axes[:-1]
        array = _to_channel_first(path, array, axes, {})
    elif kind in ("png", "jpeg"):
        array = decode_png_jpeg(path, kind)
        if array.ndim == 3:
            if array.shape[-1] in (2, 4):
                array = array[..., :-1]  # drop alpha
            if array.shape[-1] == 3 and not (np.array_equal(array[..., 0], array[..., 1])
                                             and np.array_equal(array[..., 0], array[..., 2])):
                raise InputError(f"{path}: colour image; brightfield planes must be grey")
            array = array[..., 0]
    else:
        raise InputError(f"{path}: {kind} files are not read as image planes")
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or min(array.shape[1:]) < 1:
        raise InputError(f"{path}: unsupported image shape {tuple(array.shape)}; expected (H, W) or (P, H, W)")
    check_finite(ImageRecord(path, kind, {f"plane {i}": plane for i, plane in enumerate(array)}))
    return array.astype(np.float32)


def _series_array(series: Any) -> tuple[np.ndarray, str, dict[str, Any]]:
    """``(array, axes, metadata)`` of a TIFF series. A z-stack stored one plane per page is max-projected page by
    page, so memory holds the projection and one plane, never the whole stack; other series are read whole."""
    axes, shape = series.axes.upper(), tuple(series.shape)
    pages = series.pages
    planes = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    plain = ("Z" in axes and axes.endswith("YX") and len(pages) == planes and all(p is not None for p in pages)
             and tuple(pages[0].shape) == shape[-2:])
    if not plain:
        return series.asarray(), axes, {}
    z = axes.index("Z")
    lowest = -np.inf if np.dtype(series.dtype).kind == "f" else np.iinfo(series.dtype).min
    projection = np.full(shape[:z] + shape[z + 1:], lowest, dtype=series.dtype)
    for page, index in zip(pages, np.ndindex(*shape[:-2])):
        target = index[:z] + index[z + 1:]
        np.maximum(projection[target], page.asarray(), out=projection[target])
    return projection, axes.replace("Z", ""), {"z_projected": int(shape[z])}


def _to_channel_first(path: Path, array: np.ndarray, axes: str, meta: dict) -> np.ndarray:
    """Reduce a TIFF series to ``(H, W)`` or ``(C, H, W)`` following rule 5 of the module docstring."""
    axes = axes.upper()
    if "T" in axes:
        t = axes.index("T")
        if array.shape[t] > 1:
            raise InputError(f"{path}: time series with {array.shape[t]} time points; split it into one file per time point")
        array, axes = np.take(array, 0, axis=t), axes.replace("T", "")
    if "Z" in axes:
        z = axes.index("Z")
        meta["z_projected"] = int(array.shape[z])
        array, axes = array.max(axis=z), axes.replace("Z", "")  # z max-projection, as OpenCell / cytoself do
    # drop singleton axes other than Y and X
    for i in reversed(range(len(axes))):
        if axes[i] not in "YX" and array.shape[i] == 1:
            array, axes = np.take(array, 0, axis=i), axes[:i] + axes[i + 1:]
    if "Y" not in axes or "X" not in axes:
        raise InputError(f"{path}: TIFF axes {axes!r} have no Y and X")
    others = [i for i, a in enumerate(axes) if a not in "YX"]
    if len(others) > 1:
        raise InputError(
            f"{path}: cannot find the channel axis among TIFF axes {axes!r} shape {tuple(array.shape)}; "
            "save one image per channel or as (C, H, W)"
        )
    if not others:
        return np.moveaxis(array, [axes.index("Y"), axes.index("X")], [0, 1])
    meta["channel_axis"] = axes[others[0]]
    order = [others[0], axes.index("Y"), axes.index("X")]
    return np.transpose(array, order)


def _named(path: Path, kind: str, array: np.ndarray, channel_order: Sequence[str] | None,
           ome_names: list[str] | None, pixel_size_nm: float | None, meta: dict) -> ImageRecord:
    """Name the planes of a ``(C, H, W)`` array from channel_order, OME names or the HPA composite default."""
    n_channels = array.shape[0]
    names = name_channels(path, n_channels, channel_order)
    if names is not None:
        meta["channel_source"] = "channel_order"
    elif ome_names is not None and len(ome_names) == n_channels:
        try:
            names = [ch.canonical_channel(n) for n in ome_names]
        except ValueError as err:
            raise InputError(f"{path}: OME channel name not recognised ({err}); pass channel_order") from None
        meta["channel_source"] = "OME channel names"
    elif n_channels == 1:
        names = [name_hint(path) or ch.PROTEIN]
        meta["channel_source"] = "file name" if names[0] != ch.PROTEIN else "single plane -> protein"
    elif n_channels in (3, 4) and array.dtype.kind in "ui":
        names = list(HPA_COMPOSITE_ORDER[:n_channels])
        meta["channel_source"] = "hpa composite R,G,B,Y"
    else:
        raise InputError(
            f"{path}: {n_channels} channels of {array.dtype} and no channel names; give channel_order "
            f"(the channel names in file order, e.g. microtubules,nucleus,er)"
        )
    if len(set(names)) != len(names):
        raise InputError(f"{path}: channel names repeat ({', '.join(names)}); pass channel_order")
    return ImageRecord(path, kind, {n: array[i] for i, n in enumerate(names)}, pixel_size_nm=pixel_size_nm, metadata=meta)


# ---------------------------------------------------------------- dispatch and grouping


def read_celldiff_sample(folder: str | Path) -> ImageRecord:
    """Read a CELL-Diff sample folder holding any of ``nucleus.png``, ``ER.png``, ``microtubule.png``, ``protein.png``.

    Each file is a display-colour (or grey) RGB PNG; the file name identifies the channel and a contradicting
    colour is an error. Returns one record with ``format="celldiff-sample"``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a directory")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.split(".")[0].lower() in CELLDIFF_FILE_NAMES
                   and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"{folder}: no CELL-Diff sample files (nucleus.png, ER.png, microtubule.png, protein.png)")
    return _merge(folder, "celldiff-sample", [read_image(p) for p in files])


def read_image(path: str | Path, channel_order: Sequence[str] | None = None, layout: str | None = None, *,
               index: int | None = None) -> ImageRecord:
    """Read one image file (or CELL-Diff sample folder) into an :class:`ImageRecord`.

    Parameters
    ----------
    path : path
        PNG, JPEG, TIFF / OME-TIFF, cytoself ``.npy`` crop stack, or a CELL-Diff sample folder.
    channel_order : sequence of str, optional
        Channel names in file order; overrides every naming rule. Its length must match the file.
    layout : {None, 'auto', 'hpa-channel', 'display-rgb', 'celldiff-sample', 'micromanager', 'landmark-stack',
              'cytoself-npy', 'generic'}
        Force a reader; ``None`` / ``'auto'`` pick it from the file signature, name and metadata.
    index : int, optional
        Crop index for ``.npy`` stacks holding more than one crop.

    Returns
    -------
    ImageRecord

    Raises
    ------
    InputError
        Missing, empty, truncated or non-image file; wrong channel count; unidentifiable channels; NaN / Inf pixels;
        more pixels than :func:`max_pixels`.

    Examples
    --------
    >>> rec = read_image("hpa/1/ER.png")            # doctest: +SKIP
    >>> rec.format, list(rec.channels)              # doctest: +SKIP
    ('hpa-display-rgb', ['er'])
    """
    return check_finite(_read_image(path, channel_order, layout, index))


def _read_image(path: str | Path, channel_order: Sequence[str] | None, layout: str | None,
                index: int | None) -> ImageRecord:
    path = Path(path)
    layout = layout or "auto"
    if layout not in LAYOUTS:
        raise InputError(f"layout {layout!r} not recognised; accepted: {', '.join(LAYOUTS)}")
    if layout == "celldiff-sample" or (layout == "auto" and path.is_dir()):
        return read_celldiff_sample(path)
    path = check_file(path)
    kind = sniff_format(path)
    check_image_size(path, kind)
    if layout == "auto":
        if kind == "npy":
            layout = "cytoself-npy"
        elif hpa_id_colour(path) is not None and channel_order is None:
            layout = "hpa-channel"
        else:
            layout = "generic"
    if layout == "hpa-channel":
        return read_hpa_channel(path)
    if layout == "cytoself-npy":
        from locscope.io.opencell import read_cytoself_record

        return read_cytoself_record(path, index=index, channel_order=channel_order)
    if layout == "micromanager":
        from locscope.io.opencell import read_micromanager_tiff

        return read_micromanager_tiff(path, channel_order=channel_order)
    if layout == "landmark-stack":
        from locscope.io.landmarks import read_landmark_stack

        return read_landmark_stack(path, channel_order=channel_order)
    if layout in ("generic", "display-rgb"):
        if kind == "tiff":
            return read_tiff(path, channel_order=channel_order)
        if kind == "npy":
            raise InputError(f"{path}: .npy files are read with layout='cytoself-npy'")
        return _flat_record(path, decode_png_jpeg(path, kind), kind, channel_order)
    raise AssertionError(f"unhandled layout {layout!r}")  # LAYOUTS and the branches above list the same names


def read_single_channel(path: str | Path) -> np.ndarray:
    """The one channel of an image file as ``(H, W)`` (source dtype), read by :func:`read_image`; for inputs that
    say the channel themselves, e.g. a column of SubCell's path-list CSV.

    Raises
    ------
    InputError
        Everything :func:`read_image` refuses, and a file that holds several channels.
    """
    record = read_image(path)
    if len(record.channels) != 1:
        raise InputError(f"{record.path}: holds {len(record.channels)} channels ({', '.join(record.channels)}); "
                         f"expected one channel in this file")
    return next(iter(record.channels.values()))


def _group_key(path: Path) -> tuple[str, ...] | None:
    """Key of the field of view a file belongs to (HPA quadruple / CELL-Diff folder), or None."""
    if path.is_dir():
        return None
    id_colour = hpa_id_colour(path)
    if id_colour is not None:
        return ("hpa", str(path.parent.resolve()), id_colour[0])
    if path.name.split(".")[0].lower() in CELLDIFF_FILE_NAMES and path.suffix.lower() in (".png", ".jpg", ".jpeg", ".tif", ".tiff"):
        return ("celldiff", str(path.parent.resolve()))
    return None


def read_images(paths: Iterable[str | Path], channel_order: Sequence[str] | None = None,
                layout: str | None = None) -> list[ImageRecord]:
    """Read many files, grouping the files of one field of view into one record.

    HPA ``{id}_{red,green,blue,yellow}.*`` files sharing folder and id become one ``"hpa-fov"`` record;
    CELL-Diff ``nucleus`` / ``ER`` / ``microtubule`` / ``protein`` files sharing a folder become one
    ``"celldiff-sample"`` record; a multi-crop ``.npy`` becomes one record per crop; other files one record each.
    A folder is a CELL-Diff sample when it holds such files, otherwise its image files are read (not recursively).
    Records keep the order in which their first file appears.

    Parameters
    ----------
    paths : iterable of path
        Files and/or CELL-Diff sample folders.
    channel_order, layout
        Passed to :func:`read_image` for files that are not grouped.

    Returns
    -------
    list of ImageRecord
    """
    groups: dict[tuple[str, ...], list[Path]] = {}
    order: list[tuple[str, ...] | Path] = []
    for path in _expand_folders(paths):
        key = _group_key(path) if (layout in (None, "auto") and channel_order is None) else None
        if key is None:
            order.append(path)
        else:
            if key not in groups:
                groups[key] = []
                order.append(key)
            groups[key].append(path)
    records: list[ImageRecord] = []
    for item in order:
        if isinstance(item, Path):
            if item.suffix.lower() == ".npy" and (layout in (None, "auto", "cytoself-npy")):
                from locscope.io.opencell import read_cytoself_crops

                records.extend(read_cytoself_crops(item, channel_order=channel_order).records())
            else:
                records.append(read_image(item, channel_order=channel_order, layout=layout))
            continue
        files = groups[item]
        if item[0] == "hpa":
            records.append(_merge(files[0].parent / item[2], "hpa-fov", [read_hpa_channel(p) for p in files]))
        else:
            records.append(_merge(files[0].parent, "celldiff-sample", [read_image(p) for p in files]))
    return [check_finite(record) for record in records]


def _expand_folders(paths: Iterable[str | Path]) -> list[Path]:
    """Paths with every folder that is not a CELL-Diff sample folder replaced by its image files (sorted)."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir() and not any(p.name.split(".")[0].lower() in CELLDIFF_FILE_NAMES for p in path.iterdir()):
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise InputError(f"{path}: folder holds no image files ({', '.join(IMAGE_SUFFIXES)})")
            out.extend(files)
        else:
            out.append(path)
    return out


def _merge(path: Path, kind: str, parts: list[ImageRecord]) -> ImageRecord:
    """Combine single-channel records of one field of view; duplicate channels and shape mismatches are errors."""
    merged: dict[str, np.ndarray] = {}
    sources: dict[str, str] = {}
    for part in parts:
        for name, plane in part.channels.items():
            if name in merged:
                raise InputError(f"{part.path}: channel '{name}' already read from {sources[name]} for the same field of view")
            if merged and plane.shape != next(iter(merged.values())).shape:
                first = next(iter(sources.values()))
                raise InputError(f"{part.path}: shape {tuple(plane.shape)} differs from {first} "
                                 f"{tuple(next(iter(merged.values())).shape)} in the same field of view")
            merged[name] = plane
            sources[name] = str(part.path)
    pixel_sizes = {p.pixel_size_nm for p in parts if p.pixel_size_nm is not None}
    meta = {"files": sources, "parts": [{"path": str(p.path), "format": p.format, **p.metadata} for p in parts]}
    return ImageRecord(path, kind, merged, pixel_size_nm=pixel_sizes.pop() if len(pixel_sizes) == 1 else None, metadata=meta)
