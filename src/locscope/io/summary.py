"""What each reader sees in a set of files: the library side of ``locscope inspect``.

:func:`inspect_paths` reads every path with the matching reader (images grouped into fields of view, sequence
files validated, label tables mapped to the ontology) and returns one JSON-ready dict per record / file.
"""

from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from locscope.errors import InputError
from locscope.io.images import ImageRecord, read_images, value_range
from locscope.io.labels import LabelRecord, read_label_table
from locscope.io.sequences import (
    DEFAULT_MAX_LENGTH,
    FASTA_SUFFIXES,
    SEQUENCE_COLUMNS,
    SequenceRecord,
    base_suffix,
    open_text,
    read_sequences,
)

TABLE_SUFFIXES = (".csv", ".tsv", ".tab")
WORKBOOK_SUFFIXES = (".xlsx",)


def summarize_image(record: ImageRecord) -> dict[str, Any]:
    """Format, shape, per-channel dtype and value range of one image record."""
    channels = []
    for name, plane in record.channels.items():
        low, high = value_range(plane)
        channels.append({"name": name, "dtype": str(plane.dtype), "min": low, "max": high,
                         "mean": float(np.mean(plane, dtype=np.float64))})
    out: dict[str, Any] = {"kind": "image", "path": str(record.path), "format": record.format,
                           "shape": list(record.shape), "channels": channels,
                           "pixel_size_nm": record.pixel_size_nm}
    sources = record.metadata.get("files")
    if sources:
        colours = {part["path"]: part.get("display_colour") for part in record.metadata.get("parts", [])}
        out["files"] = {name: Path(p).name + (f" ({colours[p]})" if colours.get(p) else "") for name, p in sources.items()}
    for key in ("channel_source", "display_colour", "z_projected", "z_projection", "index", "n_crops", "label",
                "source_shape", "in_minus1_1"):
        if key in record.metadata:
            out[key] = record.metadata[key]
    if "channels_found" in record.metadata:
        out["identified_by"] = {c["channel"]: c["identified_by"] for c in record.metadata["channels_found"]}
        out["z_slices"] = record.metadata["channels_found"][0]["z_slices"]
    return out


def summarize_sequences(path: Path, records: list[SequenceRecord], max_length: int | None) -> dict[str, Any]:
    """Record count, lengths and labels of a validated sequence file."""
    lengths = [len(r) for r in records]
    return {
        "kind": "sequences", "path": str(path), "format": "fasta" if base_suffix(path) in FASTA_SUFFIXES else "table",
        "n_records": len(records), "min_length": min(lengths), "max_length": max(lengths),
        "median_length": float(statistics.median(lengths)), "length_limit": max_length,
        "n_truncated": sum(r.truncated for r in records),
        "extended_residues": dict(Counter(c for r in records for c in r.sequence if c in "XBZUO")),
        "records": [{"id": r.id, "length": len(r), "original_length": r.original_length, "labels": r.labels,
                     "membrane": r.membrane} for r in records],
    }


def summarize_labels(path: Path, records: list[LabelRecord]) -> dict[str, Any]:
    """Row count and level-1 class counts of a label table."""
    counts = Counter(c for r in records for c in r.level1)
    return {"kind": "labels", "path": str(path), "format": records[0].source, "n_records": len(records),
            "n_without_level1": sum(not r.level1 for r in records), "level1_counts": dict(counts.most_common())}


def summarize_crops(path: Path, channel_order: Sequence[str] | None = None) -> dict[str, Any]:
    """Shape, channels, dtype and value range (over all crops) of a cytoself ``.npy`` crop set."""
    from locscope.io.opencell import read_cytoself_crops

    stack = read_cytoself_crops(path, channel_order=channel_order)
    channels = []
    for i, name in enumerate(stack.channels):
        low, high = value_range(stack.images[..., i])
        channels.append({"name": name, "dtype": str(stack.images.dtype), "min": low, "max": high,
                         "mean": float(np.mean(stack.images[..., i], dtype=np.float64))})
    return {"kind": "crops", "path": str(path), "format": "cytoself-npy", "shape": list(stack.images.shape),
            "channels": channels, "n_labels": len(stack.labels) if stack.labels is not None else 0,
            "extra_arrays": sorted(stack.extra)}


def summarize_lmdb(path: Path) -> dict[str, Any]:
    """Items, splits, channels and sequence lengths of a CELL-Diff LMDB directory (first item decoded)."""
    from locscope.io.celldiff_lmdb import CellDiffLMDB

    db = CellDiffLMDB(path)
    if len(db) == 0:
        raise InputError(f"{path}: CELL-Diff LMDB lists no keys")
    first = db[0]
    lengths = [len(str(db.raw(key).get("protein_seq") or "")) for key in db.keys]
    shapes = {name: list(image.shape) for name, image in first["images"].items()}
    return {
        "kind": "lmdb", "path": str(path), "format": "celldiff-lmdb", "n_items": len(db),
        "splits": dict(Counter(db.key_split.values())),
        "channels": [{"name": name, "dtype": str(image.dtype), "shape": shapes[name],
                      "min": value_range(image)[0], "max": value_range(image)[1]}
                     for name, image in first["images"].items()],
        "min_sequence_length": min(lengths), "max_sequence_length": max(lengths),
    }


def _table_kind(path: Path) -> str:
    with open_text(path) as handle:
        header = handle.readline().lower()
    separator = "\t" if header.count("\t") > header.count(",") else ","
    columns = [c.strip().strip('"') for c in header.strip().split(separator)]
    if any(c in SEQUENCE_COLUMNS for c in columns):
        return "sequences"
    return "labels"


def inspect_paths(paths: Sequence[str | Path], *, max_length: int | None = DEFAULT_MAX_LENGTH, truncate: bool = False,
                  channel_order: Sequence[str] | None = None, layout: str | None = None) -> list[dict[str, Any]]:
    """Read every path with its reader and summarise what it sees.

    Parameters
    ----------
    paths : sequence of path
        Image files / CELL-Diff folders (grouped into fields of view), FASTA / CSV / TSV sequence files,
        label tables, CELL-Diff LMDB directories.
    max_length, truncate
        Sequence validation (see :func:`locscope.io.sequences.read_sequences`).
    channel_order, layout
        Passed to :func:`locscope.io.read_images`.

    Returns
    -------
    list of dict
        One dict per image record, sequence file, label table or LMDB, in input order (``kind`` says which:
        ``"image"``, ``"crops"``, ``"sequences"``, ``"labels"``, ``"lmdb"``).
    """
    if not paths:
        raise InputError("no paths given")
    out: list[tuple[int, list[dict[str, Any]]]] = []
    image_paths: list[Path] = []
    first_image = None
    for position, raw in enumerate(paths):
        path = Path(raw)
        suffix = base_suffix(path)
        if path.is_file() and (suffix in FASTA_SUFFIXES or (suffix in TABLE_SUFFIXES and _table_kind(path) == "sequences")):
            records = read_sequences(path, max_length=max_length, truncate=truncate)
            out.append((position, [summarize_sequences(path, records, max_length)]))
        elif path.is_file() and suffix in TABLE_SUFFIXES + WORKBOOK_SUFFIXES:
            out.append((position, [summarize_labels(path, read_label_table(path))]))
        elif path.is_dir() and (path / "data.mdb").is_file():
            out.append((position, [summarize_lmdb(path)]))
        elif path.is_file() and suffix == ".npy" and layout in (None, "auto", "cytoself-npy"):
            out.append((position, [summarize_crops(path, channel_order)]))
        else:
            first_image = position if first_image is None else first_image
            image_paths.append(path)
    if image_paths:
        records = read_images(image_paths, channel_order=channel_order, layout=layout)
        out.append((first_image, [summarize_image(r) for r in records]))
    return [item for _, group in sorted(out, key=lambda pair: pair[0]) for item in group]
