"""Protein sequence readers: FASTA (any header, DeepLoc headers parsed), CSV / TSV with a sequence column.

Validation (:func:`validate_sequence`), applied to every record read:

- case-insensitive; the sequence is returned upper-case with whitespace removed;
- the 20 standard amino acids ``ACDEFGHIKLMNPQRSTVWY`` are accepted, and so are five extended letters, kept
  as written: ``X`` (unknown), ``B`` (D or N), ``Z`` (E or Q), ``U`` (selenocysteine), ``O`` (pyrrolysine).
  Models whose vocabulary lacks them map them with :data:`EXTENDED_TO_STANDARD` (X -> G is not implied: encoders
  treat X as their unknown token); :func:`standardise` applies that map;
- one trailing ``*`` (stop codon) is allowed and removed; ``*`` elsewhere is an invalid residue;
- any other character is an error naming the record and its 1-based position; empty sequences are errors;
- longer than ``max_length`` (default 2048) is an error unless ``truncate=True``, which keeps both termini (the
  first ``ceil(max_length / 2)`` and the last ``floor(max_length / 2)`` residues, :func:`keep_termini`: sorting
  signals sit at both ends) and records the original length in ``SequenceRecord.original_length``.

Every way a sequence enters locscope goes through :func:`validate_sequence`: FASTA and CSV / TSV files
(:func:`read_sequences`), manifests, a sequence typed on the command line (:func:`read_sequence_text`, ``--sequence``)
and design templates with ``<mask:N>`` spans (:func:`validate_template`, ``--template``), so the same input gives the
same sequence, limits and messages everywhere. A model that reads fewer residues than a sequence has crops it with the
same :func:`keep_termini` rule, and the commands report it (:func:`model_crop_note`), never silently.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterator

from locscope.errors import InputError
from locscope.io.images import check_file
from locscope.utils.sequences import keep_termini  # noqa: F401 - part of this module's interface

_MASK_SPAN = re.compile(r"<mask(?::(\d+))?>", re.IGNORECASE)

STANDARD_AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
EXTENDED_AMINO_ACIDS = "XBZUO"
ALLOWED = frozenset(STANDARD_AMINO_ACIDS + EXTENDED_AMINO_ACIDS)
# For vocabularies of 20 letters: ambiguity codes -> their commonest reading, rare residues -> their closest.
EXTENDED_TO_STANDARD: dict[str, str] = {"B": "D", "Z": "E", "U": "C", "O": "K"}
DEFAULT_MAX_LENGTH = 2048
FASTA_SUFFIXES = (".fasta", ".fa", ".faa", ".fas")
SEQUENCE_COLUMNS = ("sequence", "seq", "protein_seq", "aa_sequence", "protein_sequence")
ID_COLUMNS = ("id", "uniprot_id", "protein_id", "accession", "target_name", "name", "gene")
# DeepLoc 1.0 headers: ">Q9H400 Cell.membrane-M test" -> id, location(s), membrane flag M/S/U, optional "test".
_DEEPLOC = re.compile(r"^(?P<id>\S+)\s+(?P<loc>[A-Za-z./]+(?:-[A-Za-z./]+)*)-(?P<flag>[MSU])(?:\s+(?P<test>test))?\s*$")
# DeepLoc 1.0's ten classes; a header only counts as DeepLoc when every location is one of them.
DEEPLOC_CLASSES = ("Nucleus", "Cytoplasm", "Extracellular", "Mitochondrion", "Cell.membrane", "Endoplasmic.reticulum",
                   "Plastid", "Golgi.apparatus", "Lysosome/Vacuole", "Peroxisome")


@dataclass
class SequenceRecord:
    """One protein sequence.

    Attributes
    ----------
    id : str
        Record identifier (first word of a FASTA header, the id column of a table).
    sequence : str
        Validated upper-case sequence (possibly truncated).
    description : str
        Rest of the FASTA header, or the table row's other columns as ``key=value``.
    labels : list of str
        Localization labels found in the header (DeepLoc) or a label column.
    membrane : bool or None
        DeepLoc membrane flag: ``M`` -> True, ``S`` (soluble) -> False, ``U`` / absent -> None.
    original_length : int
        Length before truncation.
    extra : dict
        Other fields (DeepLoc ``test`` flag, table columns).
    """

    id: str
    sequence: str
    description: str = ""
    labels: list[str] = field(default_factory=list)
    membrane: bool | None = None
    original_length: int = 0

    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.sequence)

    @property
    def truncated(self) -> bool:
        return self.original_length > len(self.sequence)


def validate_sequence(seq: str, record: str, source: str | Path, max_length: int | None = DEFAULT_MAX_LENGTH,
                      truncate: bool = False) -> str:
    """Validate and normalise one sequence (rules in the module docstring).

    Parameters
    ----------
    seq : str
        Raw sequence (any case, whitespace ignored, optional trailing ``*``).
    record : str
        Record id, for error messages.
    source : str or Path
        File name, for error messages.
    max_length : int or None
        Longest accepted sequence; ``None`` disables the check.
    truncate : bool
        Cut sequences longer than ``max_length`` instead of raising.

    Returns
    -------
    str
        Upper-case sequence without whitespace or trailing ``*``.

    Raises
    ------
    InputError
        ``"<source>: record '<id>' position <n>: invalid residue 'J' (accepted: 20 standard amino acids + X B Z U O)"``,
        empty sequences, over-long sequences without ``truncate``.

    Examples
    --------
    >>> validate_sequence("mkv*", "p1", "x.fasta")
    'MKV'
    """
    seq = "".join(str(seq).split()).upper()
    if seq.endswith("*"):
        seq = seq[:-1]
    if not seq:
        raise InputError(f"{source}: record '{record}': empty sequence")
    for position, residue in enumerate(seq, start=1):
        if residue not in ALLOWED:
            raise InputError(
                f"{source}: record '{record}' position {position}: invalid residue {residue!r} "
                "(accepted: 20 standard amino acids + X B Z U O)"
            )
    if max_length is not None and len(seq) > max_length:
        if not truncate:
            raise InputError(
                f"{source}: record '{record}': sequence length {len(seq)} exceeds max length {max_length} "
                "(pass --truncate to keep both termini, or raise --max-length)"
            )
        seq = keep_termini(seq, max_length)
    return seq


def model_crop_note(length: int, model_length: int) -> str | None:
    """How a model that reads ``model_length`` residues crops a sequence of ``length`` residues, or None."""
    if length <= model_length:
        return None
    head = (model_length + 1) // 2
    return (f"the model reads {model_length} of {length} residues (the first {head} and the last "
            f"{model_length - head})")


def read_sequence_text(text: str, record: str = "sequence", source: str = "--sequence",
                       max_length: int | None = DEFAULT_MAX_LENGTH, truncate: bool = False) -> SequenceRecord:
    """A sequence given as text (e.g. ``--sequence``), validated exactly like a FASTA record
    (:func:`validate_sequence`); ``original_length`` records its length before ``truncate``."""
    raw_length = len("".join(str(text).split()).rstrip("*"))
    return SequenceRecord(record, validate_sequence(text, record, source, max_length, truncate),
                          original_length=raw_length)


def sequences_from_options(sequence: str | None, path: str | Path | None, *,
                           max_length: int | None = DEFAULT_MAX_LENGTH, truncate: bool = False) -> list[SequenceRecord]:
    """Exactly one of a typed sequence (``--sequence``, record id ``sequence``) or a FASTA / CSV / TSV file
    (``--fasta``), validated the same way (:func:`read_sequence_text`, :func:`read_sequences`)."""
    if (sequence is None) == (path is None):
        raise InputError("give exactly one of --sequence SEQ or --fasta FILE")
    if sequence is not None:
        return [read_sequence_text(sequence, max_length=max_length, truncate=truncate)]
    return read_sequences(path, max_length=max_length, truncate=truncate)


def truncation_note(record: SequenceRecord) -> str | None:
    """What ``truncate`` did to a record (``None`` if it was not cut), for the user to read."""
    if not record.truncated:
        return None
    head = (len(record) + 1) // 2
    return (f"record '{record.id}': {record.original_length} residues cut to {len(record)} (--truncate keeps the "
            f"first {head} and the last {len(record) - head})")


def validate_template(text: str, source: str = "--template", max_length: int | None = DEFAULT_MAX_LENGTH) -> str:
    """Validate a design template: residues as :func:`validate_sequence` (same letters, trailing ``*``, positions
    counted with each ``<mask:N>`` span as N residues) plus ``<mask>`` / ``<mask:N>`` spans; returns it normalised
    (upper-case residues, whitespace and the trailing ``*`` removed, spans written ``<mask:N>``).

    Raises
    ------
    InputError
        An invalid residue (naming its position), ``*`` before the end, an empty template, a template longer than
        ``max_length`` (templates are never truncated: a cut could remove the spans to design).
    """
    text = "".join(str(text).split())
    if text.endswith("*"):
        text = text[:-1]
    parts = _MASK_SPAN.split(text)
    # split() alternates residue text and the captured span length (None for a bare <mask>)
    residues, spans, out, position = parts[0::2], parts[1::2], [], 0
    for k, chunk in enumerate(residues):
        for offset, residue in enumerate(chunk.upper(), start=1):
            if residue not in ALLOWED:
                raise InputError(f"{source}: position {position + offset}: invalid residue {residue!r} (accepted: 20 "
                                 "standard amino acids + X B Z U O, and <mask> / <mask:N> spans)")
        out.append(chunk.upper())
        position += len(chunk)
        if k < len(spans):
            n = int(spans[k] or 1)
            if n < 1:
                raise InputError(f"{source}: position {position + 1}: <mask:{n}> needs at least one residue")
            out.append(f"<mask:{n}>")
            position += n
    if position == 0:
        raise InputError(f"{source}: empty template")
    if max_length is not None and position > max_length:
        raise InputError(f"{source}: template length {position} exceeds max length {max_length} (raise --max-length)")
    return "".join(out)


def standardise(seq: str) -> str:
    """Replace B, Z, U, O by D, E, C, K (:data:`EXTENDED_TO_STANDARD`); X is kept as the unknown residue."""
    return seq.translate(str.maketrans(EXTENDED_TO_STANDARD))


def parse_deeploc_header(header: str) -> dict[str, Any] | None:
    """Parse a DeepLoc 1.0 FASTA header (without ``>``), or return None if it is not one.

    ``"Q9H400 Cell.membrane-M test"`` -> ``{"id": "Q9H400", "labels": ["Cell.membrane"], "membrane": True,
    "test": True}``; dual locations (``Cytoplasm-Nucleus-U``) give two labels. Locations must be DeepLoc classes
    (:data:`DEEPLOC_CLASSES`; ``locscope.data.ontology.from_deeploc`` maps them to level 1), so an ordinary header
    such as ``"P1 Hemoglobin-S"`` is not mistaken for one.
    """
    match = _DEEPLOC.match(header.strip())
    if match is None or not all(label in DEEPLOC_CLASSES for label in match["loc"].split("-")):
        return None
    return {
        "id": match["id"],
        "labels": match["loc"].split("-"),
        "membrane": {"M": True, "S": False, "U": None}[match["flag"]],
        "test": match["test"] is not None,
    }


def read_fasta(path: str | Path, max_length: int | None = DEFAULT_MAX_LENGTH, truncate: bool = False) -> list[SequenceRecord]:
    """Read a FASTA file (headers of any form; DeepLoc headers parsed into labels and membrane flag).

    Raises
    ------
    InputError
        Empty file, text before the first header, a header without sequence, an invalid residue, duplicate ids.
    """
    return list(iter_fasta(path, max_length, truncate))


def iter_fasta(path: str | Path, max_length: int | None = DEFAULT_MAX_LENGTH,
               truncate: bool = False) -> Iterator[SequenceRecord]:
    """Yield the records of a FASTA file one at a time (proteome-scale files are never held whole).

    The same validation and errors as :func:`read_fasta`; a duplicate id is reported when it is reached.
    """
    path = _check_text_file(path)
    header: str | None = None
    chunks: list[str] = []
    header_line = 0
    seen: set[str] = set()

    def record() -> SequenceRecord:
        parsed = _fasta_record(path, header, "".join(chunks), header_line, max_length, truncate)
        if parsed.id in seen:
            raise InputError(f"{path}: record '{parsed.id}' appears twice")
        seen.add(parsed.id)
        return parsed

    with open_text(path) as handle:
        for line_number, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if line.startswith(">"):
                if header is not None:
                    yield record()
                header, chunks, header_line = line[1:], [], line_number
            elif line.strip() and not line.startswith(";"):
                if header is None:
                    raise InputError(f"{path}: line {line_number}: sequence data before the first '>' header; not a FASTA file")
                chunks.append(line.strip())
    if header is None:
        raise InputError(f"{path}: no FASTA records (no line starts with '>')")
    yield record()


def count_records(path: str | Path) -> int:
    """Records in a sequence file without validating them: FASTA headers, or table rows below the header."""
    path = _check_text_file(path)
    with open_text(path) as handle:
        first = next((line for line in handle if line.strip()), "")
        if first.startswith(">") or base_suffix(path) in FASTA_SUFFIXES:
            return int(first.startswith(">")) + sum(1 for line in handle if line.startswith(">"))
        return sum(1 for line in handle if line.strip())


def iter_sequences(path: str | Path, max_length: int | None = DEFAULT_MAX_LENGTH, truncate: bool = False,
                   **table_options: Any) -> Iterator[SequenceRecord]:
    """Like :func:`read_sequences`, but FASTA records are read and validated one at a time."""
    if _is_fasta(path):
        return iter_fasta(path, max_length, truncate)
    return iter(read_sequences(path, max_length, truncate, **table_options))


def _fasta_record(path: Path, header: str, seq: str, line: int, max_length: int | None, truncate: bool) -> SequenceRecord:
    header = header.strip()
    if not header:
        raise InputError(f"{path}: line {line}: empty FASTA header")
    deeploc = parse_deeploc_header(header)
    record_id = deeploc["id"] if deeploc else header.split()[0]
    description = header[len(record_id):].strip()
    raw_length = len("".join(seq.split()).rstrip("*"))
    sequence = validate_sequence(seq, record_id, path, max_length, truncate)
    if deeploc:
        return SequenceRecord(record_id, sequence, description, deeploc["labels"], deeploc["membrane"], raw_length,
                              {"test": deeploc["test"]})
    return SequenceRecord(record_id, sequence, description, original_length=raw_length)


def read_sequence_table(path: str | Path, max_length: int | None = DEFAULT_MAX_LENGTH, truncate: bool = False,
                        sequence_column: str | None = None, id_column: str | None = None,
                        label_column: str | None = None) -> list[SequenceRecord]:
    """Read a CSV / TSV (delimiter sniffed from the extension / first line) with a sequence column.

    Parameters
    ----------
    sequence_column, id_column, label_column : str, optional
        Column names; found case-insensitively among :data:`SEQUENCE_COLUMNS` / :data:`ID_COLUMNS` / ``level1`` /
        ``labels`` / ``label`` when not given. Labels are ``;``-separated.
    """
    path = _check_text_file(path)
    with open_text(path, newline="") as handle:
        first = handle.readline()
        handle.seek(0)
        delimiter = "\t" if (base_suffix(path) in (".tsv", ".tab") or first.count("\t") > first.count(",")) else ","
        reader = csv.DictReader(handle, delimiter=delimiter)
        columns = reader.fieldnames or []
        seq_col = _column(path, columns, sequence_column, SEQUENCE_COLUMNS, "sequence", required=True)
        id_col = _column(path, columns, id_column, ID_COLUMNS, "id", required=False)
        label_col = _column(path, columns, label_column, ("level1", "labels", "label", "location"), "label", required=False)
        records = []
        for row_number, row in enumerate(reader, start=2):
            record_id = (row.get(id_col) or "").strip() if id_col else ""
            record_id = record_id or f"row{row_number}"
            raw = row.get(seq_col) or ""
            raw_length = len("".join(raw.split()).rstrip("*"))
            sequence = validate_sequence(raw, record_id, f"{path}: line {row_number}", max_length, truncate)
            labels = [t.strip() for t in (row.get(label_col) or "").split(";") if t.strip()] if label_col else []
            extra = {k: v for k, v in row.items() if k not in (seq_col, id_col) and k is not None}
            records.append(SequenceRecord(record_id, sequence, "", labels, None, raw_length, extra))
    if not records:
        raise InputError(f"{path}: table has a header but no rows")
    _check_unique(path, records)
    return records


def _column(path: Path, columns: list[str], given: str | None, candidates: tuple[str, ...], what: str,
            required: bool) -> str | None:
    if given is not None:
        if given not in columns:
            raise InputError(f"{path}: no column {given!r} (columns: {', '.join(columns)})")
        return given
    lowered = {c.lower().strip(): c for c in columns}
    for candidate in candidates:
        if candidate in lowered:
            return lowered[candidate]
    if required:
        raise InputError(f"{path}: no {what} column (looked for {', '.join(candidates)}; columns: {', '.join(columns)})")
    return None


_GZIP_MAGIC = b"\x1f\x8b"


def open_text(path: Path, newline: str | None = None) -> IO[str]:
    """Open a (possibly gzip-compressed) text file; undecodable bytes become U+FFFD and fail validation.

    Compressed files are decompressed whole (sequence and label files are small), so a truncated archive is
    reported here, as one ``InputError``, rather than half-way through reading.
    """
    with open(path, "rb") as handle:
        compressed = handle.read(2) == _GZIP_MAGIC
    if not compressed:
        return open(path, encoding="utf-8", errors="replace", newline=newline)
    try:
        data = gzip.decompress(path.read_bytes())
    except (OSError, EOFError):
        raise InputError(f"{path}: truncated or corrupt gzip file") from None
    return io.StringIO(data.decode("utf-8", errors="replace"), newline=newline)


def _check_text_file(path: str | Path) -> Path:
    path = check_file(path, expected="a sequence file")
    with open_text(path) as handle:
        head = handle.read(4096)
    if "\x00" in head:
        raise InputError(f"{path}: binary file, expected FASTA or CSV/TSV text")
    return path


def base_suffix(path: Path) -> str:
    """Extension without a trailing ``.gz`` (``x.fasta.gz`` -> ``.fasta``)."""
    return Path(path.stem).suffix.lower() if path.suffix.lower() == ".gz" else path.suffix.lower()


def _is_fasta(path: str | Path) -> bool:
    path = _check_text_file(path)
    with open_text(path) as handle:
        first = next((line for line in handle if line.strip()), "")
    return first.startswith(">") or base_suffix(path) in FASTA_SUFFIXES


def _check_unique(path: Path, records: list[SequenceRecord]) -> None:
    seen: set[str] = set()
    for record in records:
        if record.id in seen:
            raise InputError(f"{path}: record '{record.id}' appears twice")
        seen.add(record.id)


def read_sequences(path: str | Path, max_length: int | None = DEFAULT_MAX_LENGTH, truncate: bool = False,
                   **table_options: Any) -> list[SequenceRecord]:
    """Read and validate every sequence of a FASTA or CSV / TSV file.

    Parameters
    ----------
    path : path
        ``.fasta`` / ``.fa`` / ``.faa`` (or any file whose first non-blank line starts with ``>``), ``.csv``,
        ``.tsv``; each may be gzip-compressed (``.fasta.gz``).
    max_length : int or None
        Longest accepted sequence (default 2048); ``None`` disables the check.
    truncate : bool
        Keep the first ``max_length`` residues of longer sequences instead of raising.
    **table_options
        ``sequence_column``, ``id_column``, ``label_column`` for tables.

    Returns
    -------
    list of SequenceRecord

    Examples
    --------
    >>> recs = read_sequences("deeploc_our_val_set.fasta")       # doctest: +SKIP
    >>> recs[0].id, recs[0].labels, recs[0].membrane             # doctest: +SKIP
    ('Q9Y4C2', ['Cell.membrane'], True)
    """
    path = _check_text_file(path)
    if _is_fasta(path):
        return read_fasta(path, max_length, truncate)
    if base_suffix(path) in (".csv", ".tsv", ".tab", ".txt"):
        return read_sequence_table(path, max_length, truncate, **table_options)
    raise InputError(f"{path}: not a FASTA or CSV/TSV sequence file (first line does not start with '>')")
