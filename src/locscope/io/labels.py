"""Label-table readers: HPA ``subcellular_location.tsv``, OpenCell annotations, seq2loc level1/2/3 CSVs.

Every reader returns one :class:`LabelRecord` per protein with the source terms kept and the level-1 classes
of the localization ontology (:mod:`locscope.data.ontology`) filled in; ``record.hierarchy()`` gives the
level1 / level2 / level3 / subcell labels of the store contract.

- HPA: ``Main location`` and ``Additional location`` (``;``-separated HPA terms) -> level 1 via ``from_hpa``;
  terms the ontology deliberately leaves unmapped (Aggresome, Midbody, ...) are dropped from ``level1``.
- OpenCell flat annotations (``ensg_id, target_name, annotation_name, annotation_grade``): annotations with grade
  ``>= min_grade`` (default 3, "prominent", the rule seq2loc used to build ``opencell_raw.csv``) -> level 1 via
  ``from_opencell``.
- seq2loc tables (``level1``, ``level2``, ``level3`` columns, ``;``-separated): the names are checked against the
  ontology and level 2 / 3 must follow from level 1.
- cytoself's literature-curated organelle markers (XLSX): 16 organelle names -> level 1 (:data:`MARKER_TO_LEVEL1`).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from locscope.data import ontology
from locscope.errors import InputError
from locscope.io.images import check_file
from locscope.io.sequences import open_text


@dataclass
class LabelRecord:
    """Localization labels of one protein from one table.

    Attributes
    ----------
    id : str
        Primary id of the row (Ensembl gene id for HPA / OpenCell, the id column of seq2loc tables).
    name : str
        Gene / target name.
    terms : list of str
        Source-vocabulary terms, in table order (HPA main then additional; OpenCell by grade).
    level1 : list of str
        Ontology level-1 classes of the terms.
    source : str
        ``"hpa"``, ``"opencell"`` or ``"seq2loc"``.
    extra : dict
        Other columns: HPA ``main`` / ``additional`` / ``reliability``; OpenCell ``grades``
        (term -> grade); seq2loc ``uniprot_id``, ``sequence``, ...
    """

    id: str
    name: str
    terms: list[str]
    level1: list[str]
    source: str
    extra: dict[str, Any] = field(default_factory=dict)

    def hierarchy(self) -> dict[str, list[str]]:
        """``{"level1", "level2", "level3", "subcell"}`` label lists (see ``ontology.hierarchy_labels``)."""
        return ontology.hierarchy_labels(self.level1)


def _split(value: str | None) -> list[str]:
    return [t.strip() for t in (value or "").split(";") if t.strip()]


def _rows(path: str | Path, delimiter: str, required: tuple[str, ...]) -> tuple[Path, list[dict[str, str]]]:
    path = check_file(path, expected="a label table")
    with open_text(path, newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        columns = reader.fieldnames or []
        missing = [c for c in required if c not in columns]
        if missing:
            raise InputError(f"{path}: missing column(s) {', '.join(missing)} (columns: {', '.join(columns) or 'none'})")
        rows = list(reader)
    if not rows:
        raise InputError(f"{path}: table has a header but no rows")
    return path, rows


def _to_level1(path: Path, line: int, terms: list[str], convert: Any) -> list[str]:
    out: list[str] = []
    for term in terms:
        try:
            level1 = convert(term)
        except InputError as err:
            raise InputError(f"{path}: line {line}: {err}") from None
        if level1 and level1 not in out:
            out.append(level1)
    return out


def read_hpa_locations(path: str | Path) -> list[LabelRecord]:
    """Read an HPA ``subcellular_location.tsv`` (columns Gene, Gene name, Reliability, Main / Additional location).

    Returns
    -------
    list of LabelRecord
        One per gene; ``extra`` holds ``main``, ``additional`` (term lists) and ``reliability``.

    Raises
    ------
    InputError
        Missing columns, an HPA term the ontology does not know (naming file, line and term).
    """
    path, rows = _rows(path, "\t", ("Gene", "Gene name", "Reliability", "Main location", "Additional location"))
    records = []
    for line, row in enumerate(rows, start=2):
        main, additional = _split(row["Main location"]), _split(row["Additional location"])
        terms = main + [t for t in additional if t not in main]
        records.append(LabelRecord(
            row["Gene"], row["Gene name"], terms, _to_level1(path, line, terms, ontology.from_hpa), "hpa",
            {"main": main, "additional": additional, "reliability": row["Reliability"]},
        ))
    return records


def read_opencell_annotations(path: str | Path, min_grade: int = 3) -> list[LabelRecord]:
    """Read OpenCell's flat annotation table (``ensg_id, target_name, annotation_name, annotation_grade``).

    Parameters
    ----------
    path : path
        ``*-public-annotations-flat.csv``.
    min_grade : {1, 2, 3}
        Lowest grade kept in ``terms`` / ``level1`` (3 = prominent, 1 = weak); all grades stay in
        ``extra["grades"]``.

    Returns
    -------
    list of LabelRecord
        One per target, in order of first appearance.
    """
    if min_grade not in (1, 2, 3):
        raise InputError(f"min_grade {min_grade!r} not accepted; accepted: 1, 2, 3")
    path, rows = _rows(path, ",", ("ensg_id", "target_name", "annotation_name", "annotation_grade"))
    by_target: dict[str, LabelRecord] = {}
    for line, row in enumerate(rows, start=2):
        try:
            grade = int(row["annotation_grade"])
        except ValueError:
            raise InputError(f"{path}: line {line}: annotation_grade {row['annotation_grade']!r} is not 1, 2 or 3") from None
        name = row["target_name"]
        record = by_target.setdefault(name, LabelRecord(row["ensg_id"], name, [], [], "opencell", {"grades": {}}))
        term = row["annotation_name"].strip()
        _to_level1(path, line, [term], ontology.from_opencell)  # validates the term
        record.extra["grades"][term] = grade
    for record in by_target.values():
        ranked = sorted(record.extra["grades"].items(), key=lambda item: -item[1])
        record.terms = [term for term, grade in ranked if grade >= min_grade]
        record.level1 = ontology.map_terms(record.terms, "opencell")
    return list(by_target.values())


def read_opencell_targets(path: str | Path) -> list[dict[str, str]]:
    """Read OpenCell's target list (``cell_line_id, target_name, uniprot_id, ensg_id``) as plain dicts."""
    _, rows = _rows(path, ",", ("cell_line_id", "target_name", "uniprot_id", "ensg_id"))
    return rows


# cytoself's literature-curated organelle markers (sheet "organelle_markers") -> level 1. Each follows the UniProt
# term of the same compartment in the ontology (stress granule, P-body -> cytosol; nuclear pore complex ->
# nuclear-membrane; ERGIC unmapped); "ribosome" has no UniProt term there and is taken as cytosol.
MARKER_TO_LEVEL1: dict[str, str] = {
    "nucleus": "nucleoplasm", "cytosol": "cytosol", "mitochondria": "mitochondria", "ER": "endoplasmic-reticulum",
    "plasma membrane": "plasma-membrane", "stress granule": "cytosol", "ribosome": "cytosol",
    "centrosome": "centrosome", "lysosome": "lysosomes", "ERGIC": "", "Golgi": "golgi-apparatus",
    "peroxisome": "peroxisomes", "actin-binding_protein": "actin-filaments", "nuclear_pore": "nuclear-membrane",
    "early_endosome": "endosomes", "p-body": "cytosol",
}


def read_organelle_markers(path: str | Path, sheet: str = "organelle_markers") -> list[LabelRecord]:
    """Read cytoself's literature-curated organelle markers (XLSX: gene_name_canonical, organelle, source, Note).

    Returns
    -------
    list of LabelRecord
        One per row (``id`` = ``name`` = gene), ``terms`` = [organelle], ``level1`` from :data:`MARKER_TO_LEVEL1`,
        ``extra`` = source and note (confidence).
    """
    import pandas as pd

    path = check_file(path, expected="an XLSX table")
    try:
        workbook = pd.ExcelFile(path, engine="openpyxl")
    except Exception:  # zipfile.BadZipFile, KeyError, ValueError: whatever openpyxl meets in a non-workbook
        raise InputError(f"{path}: not a readable XLSX workbook") from None
    if sheet not in workbook.sheet_names:
        raise InputError(f"{path}: no sheet {sheet!r} (sheets: {', '.join(workbook.sheet_names)})")
    table = workbook.parse(sheet, dtype=str)
    missing = [c for c in ("gene_name_canonical", "organelle") if c not in table.columns]
    if missing:
        raise InputError(f"{path}: sheet {sheet!r} lacks column(s) {', '.join(missing)}")
    records = []
    for line, row in enumerate(table.itertuples(index=False), start=2):
        organelle = str(row.organelle).strip()
        if organelle not in MARKER_TO_LEVEL1:
            raise InputError(f"{path}: sheet {sheet!r} row {line}: organelle {organelle!r} not in the ontology")
        level1 = [MARKER_TO_LEVEL1[organelle]] if MARKER_TO_LEVEL1[organelle] else []
        extra = {"source": getattr(row, "source", None), "note": getattr(row, "Note", None)}
        records.append(LabelRecord(row.gene_name_canonical, row.gene_name_canonical, [organelle], level1, "cytoself-markers",
                                   extra))
    return records


def read_level_table(path: str | Path, id_column: str | None = None) -> list[LabelRecord]:
    """Read a seq2loc-style CSV with ``level1``, ``level2``, ``level3`` columns (``;``-separated classes).

    Parameters
    ----------
    path : path
        e.g. ``opencell_raw.csv`` (target_name, ..., level1, level2, level3, Sequence, uniprot_id).
    id_column : str, optional
        Column used as ``LabelRecord.id``; default ``uniprot_id`` if present, else the first column.

    Raises
    ------
    InputError
        Unknown class names, or level 2 / 3 that do not follow from level 1 (naming file, line and column).
    """
    path, rows = _rows(path, ",", ("level1", "level2", "level3"))
    columns = list(rows[0])
    id_column = id_column or ("uniprot_id" if "uniprot_id" in columns else columns[0])
    if id_column not in columns:
        raise InputError(f"{path}: no column {id_column!r} (columns: {', '.join(columns)})")
    name_column = "target_name" if "target_name" in columns else id_column
    records = []
    for line, row in enumerate(rows, start=2):
        level1 = _split(row["level1"])
        for column, known in (("level1", ontology.LEVEL1), ("level2", ontology.LEVEL2), ("level3", ontology.LEVEL3)):
            for value in _split(row[column]):
                if value not in known:
                    raise InputError(f"{path}: line {line}: column {column}: class {value!r} not in the ontology")
        expected = ontology.hierarchy_labels(level1)
        for column in ("level2", "level3"):
            if set(_split(row[column])) != set(expected[column]):
                raise InputError(f"{path}: line {line}: column {column}: {row[column]!r} does not follow from level1 "
                                 f"{row['level1']!r} (expected {';'.join(expected[column])})")
        extra = {k: v for k, v in row.items() if k not in ("level1", "level2", "level3", id_column)}
        records.append(LabelRecord(row[id_column], row[name_column], level1, level1, "seq2loc", extra))
    return records


def read_label_table(path: str | Path) -> list[LabelRecord]:
    """Read any supported label table, recognised by its header.

    HPA TSV (``Main location``), OpenCell flat annotations (``annotation_grade``), seq2loc level tables (``level1``),
    cytoself organelle-marker workbooks (``.xlsx``).
    """
    path = check_file(path, expected="a label table")
    if path.suffix.lower() == ".xlsx":
        return read_organelle_markers(path)
    with open_text(path) as handle:
        header = handle.readline()
    if "Main location" in header:
        return read_hpa_locations(path)
    if "annotation_grade" in header:
        return read_opencell_annotations(path)
    if "level1" in header:
        return read_level_table(path)
    raise InputError(f"{path}: not a recognised label table (expected HPA 'Main location', OpenCell "
                     "'annotation_grade' or seq2loc 'level1' columns)")
