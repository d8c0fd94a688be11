"""Dataset manifests: a CSV or YAML file listing, per item, a protein, its sequence, image files and labels.

CSV (or TSV) manifest, one item per row; paths are relative to the manifest's folder::

    protein_id,sequence,nucleus,er,microtubules,protein,level1,split_group
    P04637,MEEPQSDPSV...,cells/1/nucleus.png,cells/1/ER.png,cells/1/microtubule.png,cells/1/protein.png,nucleoplasm,
    NLS-GFP,,cells/nls/                                                          # or one `image` column (below)

Columns
    ``protein_id`` (required); ``id`` (default ``row<N>``); ``sequence`` (inline) or ``sequence_id`` (a record of
    the sequence file given with ``sequences=`` / the YAML ``sequences`` key); one column per channel named by a
    canonical channel or an alias (``protein``, ``nucleus``, ``er``, ``microtubules``, ``gfp``, ``dapi``, ...), or one
    ``image`` column naming a multi-channel file or a CELL-Diff sample folder (read with :func:`locscope.io.read_image`);
    labels as ``;``-separated ``level1`` classes or source terms in ``hpa_location`` / ``opencell_annotation`` /
    ``uniprot_location`` (mapped through :mod:`locscope.data.ontology` to level1/level2/level3/SubCell);
    ``split_group`` (items sharing it stay in one split) or ``split`` (train / val / test, given for every row);
    any other column is kept as provenance.

YAML manifest: the same fields per item under ``items:`` (``images:`` maps channel -> file, ``labels:`` may give
``level1`` as a list), plus optional top-level ``sequences`` (file), ``channels`` and ``pixel_size_nm``.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from locscope.channels import canonical_channel
from locscope.errors import InputError

LABEL_COLUMNS = {"level1": "level1", "hpa_location": "hpa", "opencell_annotation": "opencell", "uniprot_location": "uniprot"}
KNOWN_COLUMNS = {"id", "protein_id", "sequence", "sequence_id", "image", "split_group", "split", *LABEL_COLUMNS}


@dataclass
class ManifestEntry:
    """One item of a manifest before its files are read."""

    where: str  # "manifest.csv: row 3 (line 4)" or "manifest.yaml: item 2", for error messages
    id: str
    protein_id: str
    sequence: str | None
    sequence_id: str | None
    images: dict[str, Path] = field(default_factory=dict)  # channel -> file ("*" -> multi-channel file / folder)
    field_names: dict[str, str] = field(default_factory=dict)  # channel -> the column / field that named it
    labels: dict[str, list[str]] = field(default_factory=dict)
    split_group: str | None = None
    split: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)


def _split_terms(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [t.strip() for t in str(value).split(";") if t.strip()]


def _labels(where: str, fields: dict[str, Any]) -> dict[str, list[str]]:
    from locscope.data.ontology import hierarchy_labels, map_terms

    level1: list[str] = []
    for column, vocabulary in LABEL_COLUMNS.items():
        terms = _split_terms(fields.get(column))
        if not terms:
            continue
        try:
            level1 += [c for c in map_terms(terms, vocabulary) if c not in level1]
        except InputError as err:
            raise InputError(f"{where} column {column!r}: {err}") from None
    return hierarchy_labels(level1) if level1 else {}


def _channel_of(where: str, name: str) -> str | None:
    """Canonical channel of a column / images key, None when it is not a channel name."""
    try:
        return canonical_channel(name)
    except ValueError:
        return None


def _entry(where: str, root: Path, fields: dict[str, Any], images: dict[str, Any], index: int) -> ManifestEntry:
    protein_id = str(fields.get("protein_id") or "").strip()
    if not protein_id:
        raise InputError(f"{where}: empty protein_id")
    entry = ManifestEntry(
        where=where, id=str(fields.get("id") or "").strip() or f"row{index}", protein_id=protein_id,
        sequence=str(fields.get("sequence") or "").strip() or None,
        sequence_id=str(fields.get("sequence_id") or "").strip() or None,
        split_group=str(fields.get("split_group") or "").strip() or None,
        split=str(fields.get("split") or "").strip() or None,
        labels=_labels(where, fields),
    )
    for name, value in images.items():
        value = "" if value is None else str(value).strip()
        if not value:
            continue
        channel = "*" if name == "image" else _channel_of(where, name)
        if channel is None:
            raise InputError(f"{where}: unknown channel {name!r}")
        if channel in entry.images:
            raise InputError(f"{where} column {name!r}: channel {channel!r} is already given by column "
                             f"{entry.field_names[channel]!r}")
        entry.images[channel] = (root / value) if not Path(value).is_absolute() else Path(value)
        entry.field_names[channel] = name
    if not entry.images:
        raise InputError(f"{where}: no image file (give channel columns such as nucleus, er, protein, or an image column)")
    return entry


def parse_manifest(path: str | os.PathLike) -> tuple[list[ManifestEntry], dict[str, Any]]:
    """Parse a CSV / TSV / YAML manifest into entries (no image is read yet) and its top-level settings.

    Returns
    -------
    entries : list of ManifestEntry
    settings : dict
        ``sequences`` (Path or None), ``channels`` (list or None), ``pixel_size_nm`` (float or None).

    Raises
    ------
    InputError
        Missing or empty manifest, missing ``protein_id``, an unknown channel column, an unknown label term; the
        message names the row (or YAML item) and column.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: manifest not found")
    root = path.parent
    settings: dict[str, Any] = {"sequences": None, "channels": None, "pixel_size_nm": None}
    entries: list[ManifestEntry] = []
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            document = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise InputError(f"{path}: invalid YAML ({' '.join(str(err).split())})") from None
        if not isinstance(document, dict) or not isinstance(document.get("items"), list):
            raise InputError(f"{path}: a YAML manifest needs an 'items:' list")
        for key in ("sequences", "channels", "pixel_size_nm"):
            settings[key] = document.get(key)
        for index, item in enumerate(document["items"]):
            where = f"{path}: item {index}"
            if not isinstance(item, dict):
                raise InputError(f"{where}: expected a mapping of fields")
            unknown = sorted(set(item) - KNOWN_COLUMNS - {"images", "labels", "provenance"})
            if unknown:
                raise InputError(f"{where}: unknown field {unknown[0]!r}")
            fields = dict(item)
            labels = item.get("labels") or {}
            if not isinstance(labels, dict):
                raise InputError(f"{where} field 'labels': expected a mapping like {{level1: [nucleoplasm]}}")
            for key, value in labels.items():
                column = key if key in LABEL_COLUMNS else None
                if column is None:
                    raise InputError(f"{where} field 'labels': unknown key {key!r}; accepted: {', '.join(LABEL_COLUMNS)}")
                fields[column] = value
            images = dict(item.get("images") or {})
            if item.get("image"):
                images["image"] = item["image"]
            entry = _entry(where, root, fields, images, index)
            entry.provenance = dict(item.get("provenance") or {})
            entries.append(entry)
    else:
        delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle, delimiter=delimiter)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            if "protein_id" not in columns:
                raise InputError(f"{path}: no 'protein_id' column (columns: {', '.join(columns) or 'none'})")
            image_columns = [c for c in columns if c == "image" or (c not in KNOWN_COLUMNS and _channel_of("", c))]
            for c in columns:
                if c.endswith(("_image", "_file", "_path")) and c not in image_columns:
                    raise InputError(f"{path}: column {c!r}: unknown channel {c.rsplit('_', 1)[0]!r}")
            for index, row in enumerate(reader, start=1):
                row = {(k or "").strip(): v for k, v in row.items()}
                where = f"{path}: row {index} (line {reader.line_num})"
                entry = _entry(where, root, row, {c: row.get(c) for c in image_columns}, index)
                entry.provenance = {c: row[c] for c in columns
                                    if c not in KNOWN_COLUMNS and c not in image_columns and row.get(c) not in (None, "")}
                entries.append(entry)
    if not entries:
        raise InputError(f"{path}: the manifest lists no items")
    if settings["sequences"]:
        seq_path = Path(settings["sequences"])
        settings["sequences"] = seq_path if seq_path.is_absolute() else root / seq_path
    return entries, settings


class ManifestItems:
    """The items of a manifest as a lazy sequence for :func:`locscope.data.store.write_store`.

    ``items[i]`` reads item ``i``'s files (so a resumed build never re-reads finished items). Every channel must be
    present in every item; images keep their source dtype.
    """

    def __init__(self, entries: list[ManifestEntry], channels: Sequence[str], sequences: dict[str, str],
                 max_length: int | None = 2048, truncate: bool = False):
        self.entries = entries
        self.channels = list(channels)
        self.sequences = sequences
        self.max_length, self.truncate = max_length, truncate

    def __len__(self) -> int:
        return len(self.entries)

    def read_images(self, entry: ManifestEntry) -> dict[str, np.ndarray]:
        """The (H, W) image of every store channel of ``entry``, read from its files."""
        from locscope.io import read_image

        images: dict[str, np.ndarray] = {}
        for channel, file in entry.images.items():
            column = entry.field_names[channel]
            if not file.exists():
                raise InputError(f"{entry.where} column {column!r}: file not found: {file}")
            try:
                record = read_image(file)
            except InputError as err:
                raise InputError(f"{entry.where} column {column!r}: {err}") from None
            if channel == "*":
                for name, plane in record.channels.items():
                    if name in self.channels:
                        images.setdefault(name, plane)
            elif channel in record.channels:
                images[channel] = record.channels[channel]
            elif len(record.channels) == 1:  # a grey file: the column names its channel
                images[channel] = next(iter(record.channels.values()))
            else:
                raise InputError(f"{entry.where} column {column!r}: {file.name} holds channels "
                                 f"{', '.join(record.channels)}, not {channel!r}")
        missing = [c for c in self.channels if c not in images]
        if missing:
            raise InputError(f"{entry.where}: no {missing[0]!r} image (store channels: {', '.join(self.channels)})")
        return {c: images[c] for c in self.channels}

    def __getitem__(self, index: int) -> dict[str, Any]:
        entry = self.entries[index]
        sequence = entry.sequence
        if sequence is None and entry.sequence_id is not None:
            if entry.sequence_id not in self.sequences:
                raise InputError(f"{entry.where} column 'sequence_id': {entry.sequence_id!r} not in the sequence file")
            sequence = self.sequences[entry.sequence_id]
            column = "sequence_id"
        else:
            column = "sequence"
        if sequence is not None:
            from locscope.io.sequences import validate_sequence

            sequence = validate_sequence(sequence, entry.sequence_id if column == "sequence_id" else entry.id,
                                         f"{entry.where} column {column!r}", self.max_length, self.truncate)
        item: dict[str, Any] = {
            "id": entry.id, "protein_id": entry.protein_id, "sequence": sequence or "",
            "images": self.read_images(entry), "labels": entry.labels,
            "provenance": {**entry.provenance, "files": {c: str(p) for c, p in entry.images.items()}},
        }
        if entry.split_group:
            item["split_group"] = entry.split_group
        if entry.split:
            item["split"] = entry.split
        return item


def _store_dtype(images: dict[str, np.ndarray]) -> str:
    kinds = {np.asarray(a).dtype for a in images.values()}
    if any(k.kind == "f" for k in kinds):
        return "float32"
    if all(k == np.uint8 or k == np.bool_ for k in kinds):
        return "uint8"
    return "uint16"


def build_store_from_manifest(
    manifest: str | os.PathLike,
    out: str | os.PathLike,
    *,
    sequences: str | os.PathLike | None = None,
    channels: Sequence[str] | None = None,
    image_dtype: str = "auto",
    split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    max_length: int | None = 2048,
    truncate: bool = False,
    progress: bool = True,
    overwrite: bool = False,
):
    """Build a dataset store from a manifest (see the module docstring for the format).

    Parameters
    ----------
    manifest : path-like
        CSV / TSV / YAML manifest.
    out : path-like
        Store directory (written atomically; re-running after an interruption resumes).
    sequences : path-like, optional
        FASTA / CSV sequence file for ``sequence_id`` (overrides the YAML ``sequences`` key).
    channels : sequence of str, optional
        Channels to store; by default the channel columns of the manifest (or the first item's channels).
    image_dtype : {'auto', 'uint8', 'uint16', 'float32'}
        ``'auto'``: uint8 if the first item's images are all 8-bit, float32 if any is float, else uint16.
    split_fractions, seed
        Split by protein (ignored when every row gives a ``split``).
    max_length, truncate
        Sequence length limit, as for :func:`locscope.io.read_sequences`.
    overwrite : bool
        Replace a complete store at ``out`` (:func:`locscope.data.store.write_store`).

    Returns
    -------
    Store
    """
    from locscope.data.store import check_store_target, write_store

    check_store_target(out, overwrite)  # before reading any item

    entries, settings = parse_manifest(manifest)
    sequence_file = Path(sequences) if sequences is not None else settings["sequences"]
    lookup: dict[str, str] = {}
    if any(e.sequence is None and e.sequence_id for e in entries):
        if sequence_file is None:
            where = next(e.where for e in entries if e.sequence is None and e.sequence_id)
            raise InputError(f"{where} column 'sequence_id': no sequence file given (--sequences FILE or YAML 'sequences:')")
        from locscope.io import read_sequences

        # Length limits apply to the sequences the manifest uses, checked when their item is read.
        lookup = {r.id: r.sequence for r in read_sequences(sequence_file, max_length=None)}
    channels = channels or settings["channels"]
    if channels:
        canonical = []
        for name in channels:
            channel = _channel_of("", str(name))
            if channel is None:
                raise InputError(f"{manifest}: unknown channel {name!r}")
            canonical.append(channel)
        channels = canonical
    else:
        named = [c for c in entries[0].images if c != "*"]
        if "*" in entries[0].images or not named:
            from locscope.io import read_image

            file = entries[0].images.get("*")
            if file is not None and not file.exists():
                raise InputError(f"{entries[0].where} column 'image': file not found: {file}")
            named += [c for c in (read_image(file).channels if file is not None else {}) if c not in named]
        channels = named
    items = ManifestItems(entries, channels, lookup, max_length, truncate)
    first = items[0]
    shape = next(iter(first["images"].values())).shape
    if image_dtype == "auto":
        image_dtype = _store_dtype(first["images"])
    # The manifest's hash is part of the build parameters: an edited manifest restarts an interrupted build instead of
    # resuming it with items read from the old rows.
    attrs = {"manifest": str(Path(manifest).resolve()), "source": "locscope dataset build",
             "manifest_sha256": hashlib.sha256(Path(manifest).read_bytes()).hexdigest()}
    if sequence_file is not None:
        attrs["sequences"] = str(Path(sequence_file).resolve())
    if settings["pixel_size_nm"] is not None:
        attrs["pixel_size_nm"] = float(settings["pixel_size_nm"])
    return write_store(out, items, channels=channels, image_shape=shape, image_dtype=image_dtype, attrs=attrs,
                       split_fractions=split_fractions, seed=seed, progress=progress, overwrite=overwrite)
