"""The locscope dataset store: a chunked zarr v3 directory of cells, read lazily one item at a time.

Layout of a store directory ``STORE/``::

    zarr.json                 root group; attributes "locscope_store" (format, channels, masks, shape, dtype, counts,
                              split settings) and "attrs" (the caller's attrs: generator settings, provenance, pixel_size_nm)
    images/<channel>          (N, H, W) array per canonical channel, source dtype kept (uint8 / uint16 / float32),
                              one item per chunk so a random item costs one small read per channel
    masks                     (N, M, H, W) bool: all M masks of an item in one chunk (one file instead of M; the
                              simulator stores 21 compartment masks per cell), names in "locscope_store"
    ids, protein_ids          (N,) variable-length UTF-8 strings (listing without reading items)
    meta                      (N,) JSON strings: id, protein_id, sequence, labels, split and provenance of each item
    split                     (N,) int8 codes into ("train", "val", "test")
    splits/<name>             sorted int64 item indices of each split
    COMPLETE                  written last; a store without it never opens

A build writes into the sibling directory ``.STORE.partial`` (with ``build.json``, the build parameters, and
``items.jsonl``, one line per finished item, appended *after* the item's chunks are written) and renames it to ``STORE``
only after everything, the completion marker included, is on disk. A killed build therefore leaves no ``STORE`` (or
the previous complete one); running the same build again resumes after the last finished item, and a build with other
parameters starts over.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import zarr

from locscope import __version__
from locscope.channels import ALL_CHANNELS
from locscope.data.splits import SPLIT_NAMES, split_by_protein
from locscope.errors import InputError
from locscope.utils.atomic import replace_directory
from locscope.utils.outputs import check_not_below_file, exclusive_lock
from locscope.utils.progress import track

FORMAT = "locscope-store"
FORMAT_VERSION = 2  # 2: masks packed in one (N, M, H, W) array (1 had one array per mask)
COMPLETE_MARKER = "COMPLETE"
_LIST_CHUNK = 4096  # items per chunk of the id lists
_META_CHUNK = 64  # items per chunk of the per-item JSON (read with every item: keep decoding cheap)
_IMAGE_DTYPES = ("uint8", "uint16", "float32")


def partial_path(path: str | os.PathLike) -> Path:
    """The hidden sibling directory an unfinished build of ``path`` writes into."""
    path = Path(path)
    return path.with_name(f".{path.name}.partial")


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file a build of ``path`` holds (beside its partial folder) from start to finish."""
    path = Path(path)
    return path.with_name(f".{path.name}.partial.lock")


def check_store_target(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """The output-folder policy for stores: ``path`` new or empty, or a complete store replaced with ``overwrite``.

    Raises
    ------
    InputError
        ``path`` is a file (or below one), a non-empty folder that is not a complete store, or a complete store
        without ``overwrite``.
    """
    path = Path(path)
    check_not_below_file(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: is a file; a store is a folder (give a new or empty one)")
    if path.exists() and not (path / COMPLETE_MARKER).exists() and any(path.iterdir()):
        raise InputError(f"{path}: folder is not empty and is not a locscope store; nothing was written (choose a new "
                         f"or empty folder)")
    if (path / COMPLETE_MARKER).exists() and not overwrite:
        raise InputError(f"{path}: holds a complete store; pass --overwrite to replace it (the new store is built "
                         f"beside it and swapped in) or choose another folder")
    return path


def _describe(index: int, item: Mapping[str, Any]) -> str:
    ident = item.get("id") if isinstance(item, Mapping) else None
    return f"item {index}" + (f" ({ident!r})" if ident is not None else "")


def _check_image(index: int, item: Mapping[str, Any], channel: str, image: Any, shape: tuple[int, int], dtype: np.dtype,
                 kind: str = "channel") -> np.ndarray:
    """Validate one (H, W) image of an item and cast it to the store dtype without losing values."""
    where = f"{_describe(index, item)} {kind} {channel!r}"
    array = np.asarray(image)
    if array.shape != shape:
        raise InputError(f"{where}: shape {array.shape}, the store holds {shape} images")
    if kind == "mask":
        return array != 0 if array.dtype != bool else array
    if array.dtype == dtype:
        return array
    if np.issubdtype(array.dtype, np.floating) and np.issubdtype(dtype, np.integer):
        raise InputError(f"{where}: {array.dtype} image cannot be stored as {dtype} without rescaling; "
                         f"pass image_dtype='float32' or convert the image first")
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise InputError(f"{where}: values {array.min()}..{array.max()} do not fit {dtype}")
    elif array.dtype == bool:
        raise InputError(f"{where}: boolean image; pass it as a mask instead")
    return array.astype(dtype)


def _item_record(index: int, item: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON-able part of an item (everything but images and masks)."""
    labels = item.get("labels") or {}
    if not isinstance(labels, Mapping):
        raise InputError(f"{_describe(index, item)}: labels must be a dict like {{'level1': [...]}}, got {type(labels).__name__}")
    record = {
        "id": str(item.get("id", index)),
        "protein_id": str(item.get("protein_id") or item.get("id", index)),
        "sequence": str(item.get("sequence") or ""),
        "labels": {str(k): [str(v) for v in ([vals] if isinstance(vals, str) else vals)] for k, vals in labels.items()},
        "provenance": dict(item.get("provenance") or {}),
        "split_group": item.get("split_group"),
        "split": item.get("split"),
    }
    if record["split"] is not None and record["split"] not in SPLIT_NAMES:
        raise InputError(f"{_describe(index, item)}: split {record['split']!r}; accepted values are {', '.join(SPLIT_NAMES)}")
    try:
        json.dumps(record, default=_json_default)
    except TypeError as err:
        raise InputError(f"{_describe(index, item)}: labels/provenance must be JSON-serialisable ({err})") from None
    return record


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def _build_parameters(channels: Sequence[str], image_shape: tuple[int, int], image_dtype: str, mask_names: Sequence[str],
                      attrs: Mapping[str, Any], n_items: int | None, split_fractions: Sequence[float], seed: int) -> dict:
    params = {
        "channels": list(channels), "image_shape": list(image_shape), "image_dtype": image_dtype,
        "mask_names": list(mask_names), "n_items": n_items, "split_fractions": [float(f) for f in split_fractions],
        "seed": int(seed), "attrs": json.loads(json.dumps(dict(attrs), default=_json_default)),
    }
    params["fingerprint"] = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
    return params


def _read_finished_records(jsonl: Path) -> list[dict[str, Any]]:
    """Records of items whose chunks are fully written; a torn last line (killed mid-write) is cut off."""
    if not jsonl.exists():
        return []
    raw = jsonl.read_bytes()
    records, good = [], 0
    for line in raw.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
        good += len(line)
    if good != len(raw):
        with open(jsonl, "r+b") as handle:
            handle.truncate(good)
    return records


def write_store(
    path: str | os.PathLike,
    items: Iterable[Mapping[str, Any]],
    *,
    channels: Sequence[str],
    image_shape: tuple[int, int],
    image_dtype: str = "uint16",
    mask_names: Sequence[str] = (),
    attrs: Mapping[str, Any] | None = None,
    n_items: int | None = None,
    split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
) -> "Store":
    """Write items to a chunked store at ``path`` atomically; re-running an interrupted build resumes it.

    Parameters
    ----------
    path : path-like
        The store directory to create (an existing locscope store there is replaced once the new one is complete).
    items : iterable of dict
        Each item: ``id`` (str), ``protein_id`` (str), ``sequence`` (str, may be empty), ``images`` {channel: (H, W)
        array}, optional ``masks`` {name: (H, W) bool}, ``labels`` {"level1": [...], ...}, ``provenance`` (dict),
        ``split_group`` (str, items sharing it stay in one split), optionally ``split`` ('train' | 'val' | 'test': kept
        as given, e.g. on import; items without one follow their protein's given split or are drawn by protein).
        Ids must be unique. A sequence (``len`` + indexing) is resumed without re-reading finished items; any other
        iterable is re-iterated and its finished items skipped.
    channels : sequence of str
        Canonical channel names (``locscope.channels``) every item provides.
    image_shape : (H, W)
        Shape of every image and mask, in pixels.
    image_dtype : {'uint8', 'uint16', 'float32'}
        Storage dtype of the images; integer sources are stored exactly, float images need ``'float32'``.
    mask_names : sequence of str
        Names of per-item boolean masks (e.g. the simulator's compartments).
    attrs : dict, optional
        JSON-serialisable store-level attributes (generator settings, provenance, ``pixel_size_nm``).
    n_items : int, optional
        Number of items when ``items`` has no ``len`` (sizes the arrays and the progress bar). Without it the arrays
        grow as items arrive.
    split_fractions : (3,) floats
        Train / val / test fractions of items; splits are by protein (see :func:`locscope.data.splits.split_by_protein`).
    seed : int
        Seed of the split.
    progress : bool
        Show a progress bar.
    overwrite : bool
        Replace a complete store at ``path`` (the new one is built beside it and swapped in); without it a complete
        store is refused. An unfinished build of the same parameters resumes either way.

    Returns
    -------
    Store
        The finished store, opened.

    Raises
    ------
    InputError
        For unknown channels, items missing a channel or mask, wrong shapes, lossy dtype casts, a file or a non-store
        directory at ``path``, a complete store without ``overwrite``, or another build holding the store's lock.
    """
    path = Path(path)
    channels = list(channels)
    mask_names = [str(m) for m in mask_names]
    unknown = [c for c in channels if c not in ALL_CHANNELS]
    if unknown:
        raise InputError(f"{path}: unknown channel {unknown[0]!r}; accepted channels: {', '.join(ALL_CHANNELS)}")
    if not channels:
        raise InputError(f"{path}: a store needs at least one channel")
    if len(set(channels)) != len(channels) or len(set(mask_names)) != len(mask_names):
        raise InputError(f"{path}: duplicate channel or mask names in {channels + mask_names}")
    if image_dtype not in _IMAGE_DTYPES:
        raise InputError(f"image_dtype {image_dtype!r}: accepted values are {', '.join(_IMAGE_DTYPES)}")
    image_shape = tuple(int(s) for s in image_shape)
    if len(image_shape) != 2 or min(image_shape) < 1:
        raise InputError(f"image_shape {image_shape}: need (height, width) in pixels")
    check_store_target(path, overwrite)
    if n_items is None and hasattr(items, "__len__"):
        n_items = len(items)  # type: ignore[arg-type]
    attrs = dict(attrs or {})
    params = _build_parameters(channels, image_shape, image_dtype, mask_names, attrs, n_items, split_fractions, seed)

    work = partial_path(path)
    # One build at a time per store: the lock file beside the partial folder is held until the store is in place.
    with exclusive_lock(lock_path(path), f"{path}"):
        check_store_target(path, overwrite)  # again under the lock: a build that just finished counts
        build_json = work / "build.json"
        if work.exists():
            try:
                same = json.loads(build_json.read_text()).get("fingerprint") == params["fingerprint"]
            except (OSError, json.JSONDecodeError):
                same = False
            if not same:  # another build's leftovers: start over
                shutil.rmtree(work)
        if not work.exists():
            group = zarr.open_group(str(work), mode="w", zarr_format=3)
            capacity = n_items if n_items is not None else 0
            for channel in channels:
                group.create_array(f"images/{channel}", shape=(capacity, *image_shape), chunks=(1, *image_shape),
                                   dtype=image_dtype, fill_value=0)
            if mask_names:
                shape = (len(mask_names), *image_shape)
                group.create_array("masks", shape=(capacity, *shape), chunks=(1, *shape), dtype=bool, fill_value=False)
            build_json.write_text(json.dumps(params, indent=2) + "\n")  # last: its presence means the arrays exist
        group = zarr.open_group(str(work), mode="r+")
        image_arrays = {c: group[f"images/{c}"] for c in channels}
        mask_array = group["masks"] if mask_names else None
        image_writers = {c: _direct_writer(work, a) for c, a in image_arrays.items()}
        mask_writer = _direct_writer(work, mask_array) if mask_array is not None else None
        resizable = [*image_arrays.values(), *([mask_array] if mask_array is not None else [])]

        jsonl = work / "items.jsonl"
        records = _read_finished_records(jsonl)
        done = len(records)
        seen_ids = {r["id"]: i for i, r in enumerate(records)}
        dtype = np.dtype(image_dtype)
        if hasattr(items, "__getitem__") and hasattr(items, "__len__"):
            pending: Iterable[tuple[int, Mapping[str, Any]]] = ((i, items[i]) for i in range(done, len(items)))  # type: ignore[index]
        else:
            pending = ((i, item) for i, item in enumerate(items) if i >= done)
        total = None if n_items is None else max(n_items - done, 0)
        with open(jsonl, "ab") as log:
            for index, item in track(pending, f"writing {path.name}", total=total, enabled=progress):
                if not isinstance(item, Mapping):
                    raise InputError(f"item {index}: expected a dict, got {type(item).__name__}")
                images = item.get("images") or {}
                extra = sorted(set(images) - set(channels))
                if extra:
                    raise InputError(f"{_describe(index, item)}: unknown channel {extra[0]!r}; store channels: {', '.join(channels)}")
                masks = item.get("masks") or {}
                record = _item_record(index, item)
                if record["id"] in seen_ids:
                    raise InputError(f"{_describe(index, item)}: duplicate id (item {seen_ids[record['id']]} has it too)")
                seen_ids[record["id"]] = index
                checked = {}
                for channel in channels:
                    if channel not in images:
                        raise InputError(f"{_describe(index, item)}: missing channel {channel!r}")
                    checked[channel] = _check_image(index, item, channel, images[channel], image_shape, dtype)
                checked_masks = {}
                for name in mask_names:
                    if name not in masks:
                        raise InputError(f"{_describe(index, item)}: missing mask {name!r}")
                    checked_masks[name] = _check_image(index, item, name, masks[name], image_shape, dtype, kind="mask")
                for array in resizable:
                    if array.shape[0] <= index:
                        array.resize((max(index + 1, 2 * array.shape[0]), *array.shape[1:]))
                for channel, image in checked.items():
                    image_writers[channel](index, image)
                if mask_writer is not None:
                    mask_writer(index, np.stack([checked_masks[name] for name in mask_names]))
                # The line is appended only after the item's chunks are written: a line means a finished item.
                log.write((json.dumps(record, default=_json_default) + "\n").encode())
                log.flush()
                records.append(record)

        n = len(records)
        if n_items is not None and n != n_items:
            raise InputError(f"{path}: expected {n_items} items, got {n}")
        for array in resizable:
            if array.shape[0] != n:
                array.resize((n, *array.shape[1:]))
        _finalize(work, group, records, params, attrs)
        replace_directory(work, path)  # a previous complete store is replaced, never half-removed
    return Store.open(path)


def _string_array(group: zarr.Group, name: str, values: list[str], chunk: int = _LIST_CHUNK) -> None:
    array = group.create_array(name, shape=(len(values),), chunks=(max(1, min(chunk, len(values))),),
                               dtype=str, overwrite=True)
    if values:
        array[:] = np.asarray(values, dtype=object)


def _assign_splits(records: list[dict], fractions: Sequence[float], seed: int) -> list[str]:
    """Split of every item: its own ``split`` when given (e.g. imported data), else drawn by protein.

    Items without a split whose protein already has one (from another item) join it; the rest are split by protein
    with ``fractions`` and ``seed``. A protein given two different splits is an error.
    """
    fixed: dict[str, str] = {}
    for record in records:
        split = record.get("split")
        if split is None:
            continue
        first = fixed.setdefault(record["protein_id"], split)
        if first != split:
            raise InputError(f"item {record['id']!r}: protein {record['protein_id']!r} is in both the {first!r} and "
                             f"{split!r} splits; a protein must stay in one split")
    splits = [record.get("split") or fixed.get(record["protein_id"]) for record in records]
    free = [i for i, split in enumerate(splits) if split is None]
    if free:
        drawn = split_by_protein([records[i]["protein_id"] for i in free], fractions, seed,
                                 [records[i]["split_group"] for i in free])
        for i, split in zip(free, drawn):
            splits[i] = str(split)
    return splits  # type: ignore[return-value]


def _finalize(work: Path, group: zarr.Group, records: list[dict], params: dict, attrs: dict) -> None:
    """Write per-item metadata, the split and the attributes, then the completion marker."""
    protein_ids = [r["protein_id"] for r in records]
    splits = _assign_splits(records, params["split_fractions"], params["seed"])
    _string_array(group, "ids", [r["id"] for r in records])
    _string_array(group, "protein_ids", protein_ids)
    meta = [json.dumps({"id": r["id"], "protein_id": r["protein_id"], "sequence": r["sequence"], "labels": r["labels"],
                        "split": str(split), "provenance": r["provenance"]}, default=_json_default)
            for r, split in zip(records, splits)]
    _string_array(group, "meta", meta, chunk=_META_CHUNK)
    codes = np.asarray([SPLIT_NAMES.index(s) for s in splits], dtype=np.int8)
    group.create_array("split", shape=(len(records),), chunks=(max(1, min(_LIST_CHUNK * 16, len(records))),),
                       dtype="int8", overwrite=True)[:] = codes
    for code, name in enumerate(SPLIT_NAMES):
        indices = np.flatnonzero(codes == code).astype(np.int64)
        group.create_array(f"splits/{name}", shape=(len(indices),), chunks=(max(1, len(indices)),), dtype="int64",
                           overwrite=True)[:] = indices
    group.attrs.update({
        "locscope_store": {
            "format": FORMAT, "format_version": FORMAT_VERSION, "locscope_version": __version__,
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "channels": params["channels"], "mask_names": params["mask_names"], "image_shape": params["image_shape"],
            "image_dtype": params["image_dtype"], "n_items": len(records),
            "split_fractions": params["split_fractions"], "seed": params["seed"],
            "split_sizes": {name: int((codes == code).sum()) for code, name in enumerate(SPLIT_NAMES)},
        },
        "attrs": params["attrs"],
    })
    (work / "items.jsonl").unlink()
    (work / "build.json").unlink()
    (work / COMPLETE_MARKER).write_text(json.dumps({"n_items": len(records)}) + "\n")


def _simple_layout(array: zarr.Array) -> tuple[str, Any, tuple[int, ...]] | None:
    """``(kind, zstd codec or None, chunk shape)`` when ``array`` has the layout :func:`write_store` creates, else None.

    zarr 3 routes every read and write through its asyncio event loop and thread pool, about 0.5 ms per read and
    several ms per write: more than reading or compressing a 256 x 256 chunk. For the layout written here (a local
    directory, regular chunks, the default ``c/i/j/k`` chunk keys, little-endian bytes + optional zstd, or
    variable-length UTF-8 + zstd, no sharding) locscope reads and writes the chunk files itself with the same
    numcodecs codecs zarr uses (``kind`` is ``"image"`` for ``(N, ...)`` arrays with one item per chunk, ``"strings"``
    for 1-d string arrays); anything else goes through zarr.
    """
    try:
        from numcodecs import Zstd
        from zarr.codecs import BytesCodec, ZstdCodec
        from zarr.codecs.vlen_utf8 import VLenUTF8Codec
        from zarr.core.chunk_key_encodings import DefaultChunkKeyEncoding
    except ImportError:
        return None
    meta = array.metadata
    if getattr(meta, "zarr_format", 2) != 3 or not isinstance(meta.chunk_key_encoding, DefaultChunkKeyEncoding):
        return None
    if meta.chunk_key_encoding.separator != "/":
        return None
    codecs = list(meta.codecs)
    first, rest = codecs[0], codecs[1:]
    if len(rest) > 1 or any(not isinstance(c, ZstdCodec) for c in rest):
        return None
    zstd = Zstd(level=rest[0].level, checksum=rest[0].checksum) if rest else None
    chunk = tuple(meta.chunk_grid.chunk_shape)
    if isinstance(first, BytesCodec) and array.ndim >= 3 and chunk == (1, *array.shape[1:]):
        if first.endian is not None and first.endian.value != "little":
            return None
        return "image", zstd, chunk
    if isinstance(first, VLenUTF8Codec) and array.ndim == 1:
        return "strings", zstd, chunk
    return None


def _direct_reader(root: Path, array: zarr.Array) -> Callable[[int], Any] | None:
    """A reader of element ``i`` along axis 0 that decodes the chunk file itself (see :func:`_simple_layout`)."""
    layout = _simple_layout(array)
    if layout is None:
        return None
    kind, zstd, chunk = layout
    decompress = zstd.decode if zstd is not None else bytes
    prefix = os.path.join(root, array.path, "c", "")
    if kind == "image":
        suffix = "/0" * (array.ndim - 1)  # chunk key c/i/0/0[/0]
        dtype = np.dtype(array.dtype).newbyteorder("<")
        fill = np.full(array.shape[1:], array.metadata.fill_value, dtype=array.dtype)

        def read_image(i: int) -> np.ndarray:
            try:
                with open(prefix + str(i) + suffix, "rb") as handle:
                    data = handle.read()
            except FileNotFoundError:  # never written: all fill value (zarr skips empty chunks)
                return fill.copy()
            return np.frombuffer(decompress(data), dtype=dtype).reshape(chunk[1:]).astype(array.dtype, copy=True)

        return read_image
    from numcodecs import VLenUTF8

    per_chunk, strings = chunk[0], VLenUTF8()

    def read_string(i: int) -> str:
        with open(f"{prefix}{i // per_chunk}", "rb") as handle:
            data = handle.read()
        return str(strings.decode(decompress(data))[i % per_chunk])

    return read_string


def _direct_writer(root: Path, array: zarr.Array) -> Callable[[int, np.ndarray], None]:
    """``write(i, image)`` storing item ``i`` of an ``(N, ...)`` array: the chunk file written directly when the
    layout is simple (see :func:`_simple_layout`), else through zarr. Like zarr, an all-fill-value chunk is not stored."""
    layout = _simple_layout(array) if os.environ.get("LOCSCOPE_STORE_DIRECT", "1") != "0" else None
    if layout is None or layout[0] != "image":
        def write_via_zarr(i: int, image: np.ndarray) -> None:
            array[i] = image

        return write_via_zarr
    _, zstd, _ = layout
    compress = zstd.encode if zstd is not None else bytes
    dtype = np.dtype(array.dtype).newbyteorder("<")
    fill = array.metadata.fill_value
    prefix = os.path.join(root, array.path, "c", "")

    suffix = "/0" * (array.ndim - 2)

    def write_direct(i: int, image: np.ndarray) -> None:
        folder = prefix + str(i) + suffix  # chunk key c/i/0/0[/0]: folder + "/0"
        if not (image == fill).all():
            os.makedirs(folder, exist_ok=True)
            with open(folder + "/0", "wb") as handle:
                handle.write(compress(np.ascontiguousarray(image, dtype=dtype).tobytes()))
        elif os.path.exists(folder + "/0"):  # a resumed build overwriting an earlier attempt
            os.remove(folder + "/0")

    return write_direct


def _direct_readers(root: Path, arrays: list[zarr.Array]) -> list[Callable[[int], Any]] | None:
    """Direct readers for all ``arrays`` (only if every one qualifies and the store is a plain local directory)."""
    if os.environ.get("LOCSCOPE_STORE_DIRECT", "1") == "0":
        return None
    readers = [_direct_reader(root, a) for a in arrays]
    return readers if all(r is not None for r in readers) else None  # type: ignore[return-value]


class _MaskView:
    """Lazy ``(N, H, W)`` view of one mask of the packed ``(N, M, H, W)`` mask array: ``view[i]``, ``view[a:b]``,
    ``view[i, rows, cols]`` and ``numpy.asarray(view)`` read only what they need."""

    def __init__(self, packed: zarr.Array, index: int):
        self._packed, self._index = packed, index
        self.shape = (packed.shape[0], *packed.shape[2:])
        self.dtype = np.dtype(bool)
        self.ndim = 3

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            raise IndexError("mask views take up to 3 int / slice indices, not Ellipsis")
        return self._packed[(key[0], self._index, *key[1:])]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)


class Store:
    """A finished dataset store, opened read-only; items are read lazily (nothing but ids is held in memory).

    Use :meth:`Store.open`. ``store[i]`` returns a dict ``id``, ``protein_id``, ``sequence``, ``images`` {channel:
    (H, W)}, ``masks`` {name: (H, W) bool}, ``labels``, ``split`` and ``provenance``. A ``Store`` can be pickled
    (e.g. into DataLoader workers): it reopens the directory on the other side.
    """

    def __init__(self, path: Path, group: zarr.Group):
        self.path = path
        self._group = group
        info = dict(group.attrs["locscope_store"])
        self.channels: tuple[str, ...] = tuple(info["channels"])
        self.mask_names: tuple[str, ...] = tuple(info["mask_names"])
        self.image_shape: tuple[int, int] = tuple(info["image_shape"])  # type: ignore[assignment]
        self.image_dtype: str = info["image_dtype"]
        self.info: dict[str, Any] = info
        self.attrs: dict[str, Any] = dict(group.attrs.get("attrs", {}))
        self._images = {c: group[f"images/{c}"] for c in self.channels}
        self._packed_masks = group["masks"] if self.mask_names else None
        self._ids = group["ids"]
        self._protein_ids = group["protein_ids"]
        self._meta = group["meta"]
        self._n = int(info["n_items"])
        self._id_cache: list[str] | None = None
        self._direct = _direct_readers(path, self._item_arrays())

    @classmethod
    def open(cls, path: str | os.PathLike) -> "Store":
        """Open a complete store.

        Raises
        ------
        InputError
            If ``path`` is missing, not a locscope store, or an unfinished build.
        """
        path = Path(path)
        if not path.exists():
            if partial_path(path).exists():
                raise InputError(f"{path}: incomplete store (an interrupted build left {partial_path(path).name}); "
                                 f"re-run the build to resume it")
            raise InputError(f"{path}: store not found")
        if path.name.endswith(".partial") or (path / "build.json").exists():
            raise InputError(f"{path}: incomplete store (an unfinished build); re-run the build to resume it")
        if not (path / COMPLETE_MARKER).exists():
            raise InputError(f"{path}: not a complete locscope store (no {COMPLETE_MARKER} marker)")
        try:
            group = zarr.open_group(str(path), mode="r")
            info = group.attrs["locscope_store"]
        except Exception as err:  # zarr raises several error types for unreadable metadata
            raise InputError(f"{path}: not a readable locscope store ({type(err).__name__}: {err})") from None
        if info.get("format") != FORMAT or info.get("format_version") != FORMAT_VERSION:
            raise InputError(f"{path}: store format {info.get('format')!r} version {info.get('format_version')} is not "
                             f"supported (this locscope reads version {FORMAT_VERSION}); rebuild the store")
        return cls(path, group)

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return (f"Store({str(self.path)!r}, n={self._n}, channels={self.channels}, masks={self.mask_names}, "
                f"image_shape={self.image_shape}, dtype={self.image_dtype})")

    def __getstate__(self) -> dict:
        return {"path": str(self.path)}

    def __setstate__(self, state: dict) -> None:
        other = Store.open(state["path"])
        self.__dict__.update(other.__dict__)

    @property
    def ids(self) -> list[str]:
        """Item ids, in store order (read once, on first use)."""
        if self._id_cache is None:
            self._id_cache = [str(v) for v in self._ids[:]] if self._n else []
        return self._id_cache

    @property
    def protein_ids(self) -> list[str]:
        """Protein id of every item, in store order."""
        return [str(v) for v in self._protein_ids[:]] if self._n else []

    def _index(self, i: int) -> int:
        i = int(i)
        if not -self._n <= i < self._n:
            raise IndexError(f"item {i} out of range for a store of {self._n} items")
        return i % self._n

    def _item_arrays(self) -> list[zarr.Array]:
        """The arrays one item is read from: the channels, the packed masks (if any), the metadata JSON."""
        masks = [self._packed_masks] if self._packed_masks is not None else []
        return [*self._images.values(), *masks, self._meta]

    def _read_chunks(self, i: int) -> list[Any]:
        """Images, masks and the metadata JSON of item ``i``."""
        arrays = self._item_arrays()
        if self._direct is not None:
            return [read(i) for read in self._direct]
        try:
            from zarr.core.sync import sync
        except ImportError:  # zarr moved its helper: one synchronous read per array
            return [a[i] for a in arrays]

        async def gather() -> list[Any]:  # all arrays in one pass of zarr's event loop
            return await asyncio.gather(*(a._async_array.getitem(i) for a in arrays))

        return list(sync(gather()))

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = self._index(i)
        *arrays, meta_json = self._read_chunks(i)
        meta = json.loads(str(meta_json))
        return {
            "id": meta["id"],
            "protein_id": meta["protein_id"],
            "sequence": meta["sequence"],
            "images": dict(zip(self.channels, arrays[: len(self.channels)])),
            "masks": dict(zip(self.mask_names, arrays[len(self.channels)])) if self.mask_names else {},
            "labels": meta["labels"],
            "split": meta["split"],
            "provenance": meta["provenance"],
        }

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(self._n):
            yield self[i]

    def split_indices(self, split: str) -> np.ndarray:
        """Sorted int64 indices of the items in ``split`` (``'train'``, ``'val'`` or ``'test'``)."""
        if split not in SPLIT_NAMES:
            raise InputError(f"split {split!r}: accepted values are {', '.join(SPLIT_NAMES)}")
        array = self._group[f"splits/{split}"]
        return np.asarray(array[:], dtype=np.int64) if array.shape[0] else np.zeros(0, dtype=np.int64)

    def image_array(self, channel: str) -> zarr.Array:
        """The lazy ``(N, H, W)`` zarr array of ``channel`` (slicing reads only the chunks it touches)."""
        if channel not in self._images:
            raise InputError(f"{self.path}: unknown channel {channel!r}; store channels: {', '.join(self.channels)}")
        return self._images[channel]

    def mask_array(self, name: str) -> "_MaskView":
        """The lazy ``(N, H, W)`` boolean array of mask ``name`` (slicing reads only the chunks it touches)."""
        if name not in self.mask_names:
            known = ", ".join(self.mask_names) or "none"
            raise InputError(f"{self.path}: unknown mask {name!r}; store masks: {known}")
        return _MaskView(self._packed_masks, self.mask_names.index(name))


def store_summary(store: Store) -> dict[str, Any]:
    """What ``locscope dataset info`` prints: shape, channels, splits, proteins, label counts, attrs (JSON-able).

    Reads the per-item metadata (not the images) once.
    """
    label_counts: dict[str, dict[str, int]] = {}
    proteins_per_split: dict[str, set[str]] = {name: set() for name in SPLIT_NAMES}
    with_sequence = 0
    meta = store._meta[:] if len(store) else []
    for text in meta:
        record = json.loads(str(text))
        proteins_per_split[record["split"]].add(record["protein_id"])
        with_sequence += bool(record["sequence"])
        for level, names in record["labels"].items():
            for name in names:
                counts = label_counts.setdefault(level, {})
                counts[name] = counts.get(name, 0) + 1
    return {
        "path": str(store.path), "n_items": len(store), "channels": list(store.channels),
        "mask_names": list(store.mask_names), "image_shape": list(store.image_shape), "image_dtype": store.image_dtype,
        "n_proteins": len(set().union(*proteins_per_split.values())), "items_with_sequence": with_sequence,
        "splits": {name: {"items": int(len(store.split_indices(name))), "proteins": len(proteins_per_split[name])}
                   for name in SPLIT_NAMES},
        "labels": {level: dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))) for level, counts in label_counts.items()},
        "attrs": store.attrs, "created_utc": store.info.get("created_utc"), "locscope_version": store.info.get("locscope_version"),
    }
