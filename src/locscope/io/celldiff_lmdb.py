"""The CELL-Diff LMDB layout: read it safely, write it compatibly.

Layout (CELL-Diff's ``HPALMDBDataset``): a directory that is an LMDB environment (``data.mdb``, ``lock.mdb``) and
holds ``{split}_keys.json`` files, each a JSON list of LMDB keys (UTF-8 strings). Every value is a pickled dict:

============================  =========================================================================================
``protein_img``               PNG bytes; CELL-Diff reads band 1 (green) of the RGB image
``nucleus_img``               PNG bytes; band 2 (blue)
``microtubules_img``          PNG bytes; band 0 (red)
``ER_img``                    PNG bytes; the image converted to grey (PIL ``convert('L')``)
``protein_seq``               amino-acid sequence (str)
``ensg_id``                   protein id (str); ``cell_line`` (str); ``rna_expression`` (float)
============================  =========================================================================================

locscope writes the 8-bit images exactly the way CELL-Diff's loader decodes them: protein in the green band,
nucleus in blue, microtubules in red (other bands 0) and ER as grey (R = G = B, so ``convert('L')`` returns it
unchanged). 16-bit images (``bit_depth=16``) are written as 16-bit greyscale PNGs: lossless, read by locscope, but not
by CELL-Diff's loader. locscope also stores ``id``, ``labels`` and ``split`` in each dict.

Reading never runs code from the file: values are unpickled by :class:`PlainUnpickler`, which refuses every global
(class or function) reference, so only plain builtins (dict, list, tuple, str, bytes, int, float, bool, None) load.
A pickle that names e.g. ``os.system`` is an :class:`~locscope.errors.InputError` naming the key. (CELL-Diff's
OpenCell variant pickles NumPy arrays, which this reader therefore refuses.)
"""

from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from locscope.channels import ER, MICROTUBULES, NUCLEUS, PROTEIN
from locscope.errors import InputError
from locscope.utils.outputs import check_output_folder, output_folder
from locscope.utils.progress import track

# canonical channel -> (dict field, RGB band CELL-Diff reads; None = convert('L'))
FIELDS: dict[str, tuple[str, int | None]] = {
    PROTEIN: ("protein_img", 1),
    NUCLEUS: ("nucleus_img", 2),
    MICROTUBULES: ("microtubules_img", 0),
    ER: ("ER_img", None),
}
SPLITS_WRITTEN = ("train", "val", "test")
PLAIN_TYPES = "dict, list, tuple, str, bytes, int, float, bool, None"
EXPORT_COMMAND = "dataset export-lmdb"


class PlainUnpickler(pickle.Unpickler):
    """An unpickler that loads only plain builtin values and refuses any class or function reference.

    Plain containers and scalars are encoded by pickle opcodes of their own; everything that could run code
    (``REDUCE``, ``BUILD``, ``NEWOBJ`` ...) first needs a global looked up through :meth:`find_class`, which refuses.
    """

    def __init__(self, data: bytes, source: str):
        super().__init__(io.BytesIO(data))
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        raise InputError(f"{self.source}: refusing to unpickle {module}.{name}; only plain values ({PLAIN_TYPES}) "
                         f"are allowed")


def plain_loads(data: bytes, source: str) -> Any:
    """Unpickle ``data`` with :class:`PlainUnpickler`; any failure is one :class:`InputError` naming ``source``."""
    try:
        return PlainUnpickler(data, source).load()
    except InputError:
        raise
    except Exception as err:  # truncated or corrupt pickles raise many error types
        raise InputError(f"{source}: not a readable pickle ({type(err).__name__}: {err})") from None


def decode_png(data: bytes, band: int | None, source: str) -> np.ndarray:
    """Decode one CELL-Diff image field to an ``(H, W)`` array: ``band`` of an RGB(A) image, or grey via PIL's
    ``convert('L')`` when ``band`` is None; single-band images (8- or 16-bit) are returned as they are."""
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as err:
        raise InputError(f"{source}: not a readable image ({type(err).__name__}: {err})") from None
    if image.mode in ("L", "I;16", "I;16B", "I;16L"):
        array = np.asarray(image)
        return array.astype(np.uint16) if array.dtype.kind == "u" and array.dtype.itemsize == 2 else array
    if image.mode == "I":  # 16-bit greyscale as PIL's int32 mode
        return np.asarray(image).astype(np.uint16)
    if band is None:
        return np.asarray(image.convert("L"))
    bands = image.convert("RGB").split() if image.mode not in ("RGB", "RGBA") else image.split()
    return np.asarray(bands[band])


def encode_png(image: np.ndarray, band: int | None, bit_depth: int = 8) -> bytes:
    """Encode an ``(H, W)`` uint8 / uint16 image as CELL-Diff's loader expects it (see the module docstring)."""
    from PIL import Image

    buffer = io.BytesIO()
    if bit_depth == 16:
        Image.fromarray(np.ascontiguousarray(image, dtype=np.uint16)).save(buffer, format="PNG")
        return buffer.getvalue()
    image = np.ascontiguousarray(image, dtype=np.uint8)
    rgb = np.zeros((*image.shape, 3), dtype=np.uint8)
    if band is None:
        rgb[...] = image[..., None]
    else:
        rgb[..., band] = image
    Image.fromarray(rgb).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


class CellDiffLMDB:
    """Read-only access to a CELL-Diff LMDB directory, item by item.

    Parameters
    ----------
    path : path-like
        The directory holding ``data.mdb`` and ``{split}_keys.json``.
    split : str, optional
        Only the keys of ``{split}_keys.json``; by default the keys of every ``*_keys.json`` in order of the file
        names, each key once (the first split naming it wins).

    Examples
    --------
    >>> db = CellDiffLMDB("hpa_lmdb", split="test")  # doctest: +SKIP
    >>> item = db[0]; item["images"]["nucleus"].shape  # doctest: +SKIP
    (256, 256)
    """

    def __init__(self, path: str | os.PathLike, split: str | None = None):
        self.path = Path(path)
        if not self.path.is_dir():
            raise InputError(f"{self.path}: CELL-Diff LMDB directory not found")
        if not (self.path / "data.mdb").is_file():
            raise InputError(f"{self.path}: no data.mdb; not an LMDB directory")
        key_files = sorted(self.path.glob("*_keys.json"))
        if split is not None:
            key_files = [self.path / f"{split}_keys.json"]
            if not key_files[0].is_file():
                known = ", ".join(p.name[: -len("_keys.json")] for p in sorted(self.path.glob("*_keys.json"))) or "none"
                raise InputError(f"{key_files[0]}: split {split!r} not found; splits here: {known}")
        if not key_files:
            raise InputError(f"{self.path}: no *_keys.json file; not a CELL-Diff LMDB directory")
        self.keys: list[str] = []
        self.key_split: dict[str, str] = {}
        for key_file in key_files:
            name = key_file.name[: -len("_keys.json")]
            try:
                keys = json.loads(key_file.read_text())
            except (OSError, json.JSONDecodeError) as err:
                raise InputError(f"{key_file}: not a JSON list of keys ({err})") from None
            if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
                raise InputError(f"{key_file}: expected a JSON list of strings")
            for key in keys:
                if key not in self.key_split:
                    self.key_split[key] = name
                    self.keys.append(key)
        self._env = None
        self._txn = None

    def _transaction(self):
        if self._txn is None:  # opened lazily so the object can be sent to DataLoader workers before use
            import lmdb

            self._env = lmdb.open(str(self.path), readonly=True, lock=False, readahead=False, max_readers=256)
            self._txn = self._env.begin(buffers=False)
        return self._txn

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_env"] = state["_txn"] = None
        return state

    def __len__(self) -> int:
        return len(self.keys)

    def raw(self, key: str) -> dict[str, Any]:
        """The unpickled value dict of ``key`` (plain values only)."""
        source = f"{self.path}: key {key!r}"
        data = self._transaction().get(key.encode())
        if data is None:
            raise InputError(f"{source}: listed in a keys file but missing from the LMDB")
        value = plain_loads(data, source)
        if not isinstance(value, dict):
            raise InputError(f"{source}: expected a pickled dict, got {type(value).__name__}")
        return value

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Item ``index`` as a locscope store item (``id``, ``protein_id``, ``sequence``, ``images``, ``labels``,
        ``split``, ``provenance``); images are ``(H, W)`` uint8 (or uint16 for 16-bit PNGs)."""
        key = self.keys[index]
        value = self.raw(key)
        source = f"{self.path}: key {key!r}"
        images = {}
        for channel, (field, band) in FIELDS.items():
            if field in value:
                if not isinstance(value[field], bytes):
                    raise InputError(f"{source}: field {field!r} must be encoded image bytes, got {type(value[field]).__name__}")
                images[channel] = decode_png(value[field], band, f"{source} field {field!r}")
        if not images:
            raise InputError(f"{source}: no image field ({', '.join(f for f, _ in FIELDS.values())})")
        provenance = {k: value[k] for k in ("cell_line", "rna_expression") if k in value}
        provenance["source"] = f"celldiff-lmdb:{self.path.name}/{key}"
        labels = value.get("labels") or {}
        return {
            "id": str(value.get("id", key)),
            "protein_id": str(value.get("ensg_id") or value.get("prot_id") or key),
            "sequence": str(value.get("protein_seq") or ""),
            "images": images,
            "labels": labels if isinstance(labels, dict) else {},
            "split": value.get("split", self.key_split[key]),
            "provenance": provenance,
        }

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for index in range(len(self)):
            yield self[index]


def _to_8bit(image: np.ndarray) -> np.ndarray:
    """uint8 as is; uint16 -> uint8 by rounding x / 257 (65535 -> 255); floats in [0, 1] -> round(255 x)."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return np.round(image / 257.0).astype(np.uint8)
    if image.dtype.kind == "f":
        return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    raise InputError(f"cannot write a {image.dtype} image as an 8-bit PNG")


def write_celldiff_lmdb(
    path: str | os.PathLike,
    items: Sequence[Mapping[str, Any]] | Any,
    *,
    bit_depth: int = 8,
    progress: bool = True,
    map_size: int = 1 << 30,
    overwrite: bool = False,
) -> Path:
    """Write items (store-shaped dicts, e.g. a :class:`~locscope.data.store.Store`) in the CELL-Diff LMDB layout.

    Parameters
    ----------
    path : path-like
        Output directory, new or empty; an earlier export there is replaced only with ``overwrite`` (written beside
        it, then swapped in); any other non-empty folder is refused untouched (:mod:`locscope.utils.outputs`).
    items : iterable of dict
        ``id``, ``protein_id``, ``sequence``, ``images`` {channel: (H, W)} (protein / nucleus / microtubules / er;
        other channels are not part of the layout and are skipped), ``labels``, ``split``, ``provenance``.
    bit_depth : {8, 16}
        8: RGB PNGs in CELL-Diff's band convention (uint16 images scaled by 1/257, float images in [0, 1] by 255);
        16: lossless 16-bit greyscale PNGs (locscope only).
    progress : bool
        Show a progress bar.
    map_size : int
        Initial LMDB map size in bytes (grown automatically when full).
    overwrite : bool
        Replace an earlier export at ``path``.

    Returns
    -------
    Path
        ``path``.
    """
    import lmdb

    if bit_depth not in (8, 16):
        raise InputError(f"bit_depth {bit_depth}: accepted values are 8, 16")
    path = Path(path)
    keys: dict[str, list[str]] = {name: [] for name in SPLITS_WRITTEN}
    total = len(items) if hasattr(items, "__len__") else None
    with output_folder(path, EXPORT_COMMAND, overwrite=overwrite, known_files=("data.mdb",)) as tmp:
        env = lmdb.open(str(tmp), map_size=map_size, subdir=True, lock=True)
        try:
            for index, item in enumerate(track(items, f"exporting {path.name}", total=total, enabled=progress)):
                key = str(item.get("id", index))
                value: dict[str, Any] = {}
                for channel, image in item.get("images", {}).items():
                    if channel not in FIELDS:
                        continue
                    field, band = FIELDS[channel]
                    array = np.asarray(image)
                    if bit_depth == 8:
                        array = _to_8bit(array)
                    elif array.dtype.kind == "f":
                        array = np.round(np.clip(array, 0, 1) * 65535).astype(np.uint16)
                    value[field] = encode_png(array, band, bit_depth)
                provenance = item.get("provenance") or {}
                value.update({
                    "id": key,
                    "ensg_id": str(item.get("protein_id", key)),
                    "protein_seq": str(item.get("sequence") or ""),
                    "cell_line": str(provenance.get("cell_line", "")),
                    "rna_expression": float(provenance.get("rna_expression", 0.0)),
                    "labels": {str(k): [str(x) for x in v] for k, v in (item.get("labels") or {}).items()},
                })
                split = item.get("split") or "train"
                if split not in keys:
                    raise InputError(f"item {key!r}: split {split!r}; accepted values are {', '.join(SPLITS_WRITTEN)}")
                value["split"] = split
                data = pickle.dumps(value, protocol=4)
                while True:
                    try:
                        with env.begin(write=True) as txn:
                            if not txn.put(key.encode(), data, overwrite=False):
                                raise InputError(f"item {index}: duplicate id {key!r}; LMDB keys must be unique")
                        break
                    except lmdb.MapFullError:
                        env.set_mapsize(env.info()["map_size"] * 2)
                keys[split].append(key)
        finally:
            env.close()
        for name, split_keys in keys.items():
            (tmp / f"{name}_keys.json").write_text(json.dumps(split_keys))
    return path


def export_store_to_lmdb(store_path: str | os.PathLike, out: str | os.PathLike, *, bit_depth: int | None = None,
                         progress: bool = True, overwrite: bool = False) -> Path:
    """Export a locscope store to the CELL-Diff LMDB layout (``bit_depth`` defaults to 16 for uint16 stores, else 8);
    ``out`` follows the output-folder policy (see :func:`write_celldiff_lmdb`)."""
    from locscope.data.store import Store

    check_output_folder(out, EXPORT_COMMAND, overwrite=overwrite, known_files=("data.mdb",))
    store = Store.open(store_path)
    if bit_depth is None:
        bit_depth = 16 if store.image_dtype == "uint16" else 8
    return write_celldiff_lmdb(out, store, bit_depth=bit_depth, progress=progress, overwrite=overwrite)


def import_lmdb_to_store(lmdb_path: str | os.PathLike, out: str | os.PathLike, *, split: str | None = None,
                         keep_splits: bool = True, seed: int = 0, progress: bool = True, overwrite: bool = False):
    """Import a CELL-Diff LMDB directory into a locscope store.

    The store holds the channels present in the first item, as uint8 (8-bit PNGs) or uint16 (any 16-bit PNG).
    With ``keep_splits`` the LMDB's own splits (``{split}_keys.json``, or the ``split`` field locscope writes) are
    kept (a protein found in two splits is an error); otherwise splits are drawn by protein from ``seed``.
    Keys files other than train / val / test (CELL-Diff also ships e.g. ``all_keys.json``) need ``keep_splits=False``
    or a single ``split``.
    """
    from locscope.data.store import check_store_target, write_store

    check_store_target(out, overwrite)
    db = CellDiffLMDB(lmdb_path, split=split)
    if not len(db):
        raise InputError(f"{db.path}: no keys to import")
    first = db[0]
    channels = [c for c in FIELDS if c in first["images"]]
    shape = first["images"][channels[0]].shape
    bits = 16 if any(first["images"][c].dtype == np.uint16 for c in channels) else 8

    class Items:
        def __len__(self) -> int:
            return len(db)

        def __getitem__(self, index: int) -> dict[str, Any]:
            item = db[index]
            if not keep_splits:
                item.pop("split")
            elif item["split"] not in SPLITS_WRITTEN:
                raise InputError(f"{db.path}: key {db.keys[index]!r} is in split {item['split']!r}; pass a split "
                                 f"(train, val or test) or draw new splits (keep_splits=False)")
            return item

    return write_store(out, Items(), channels=channels, image_shape=shape, image_dtype="uint16" if bits == 16 else "uint8",
                       attrs={"source": f"CELL-Diff LMDB {db.path}"}, seed=seed, progress=progress, overwrite=overwrite)
