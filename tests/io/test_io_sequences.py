"""Sequence readers and validation: DeepLoc FASTA, seq2loc CSV, exact errors for bad records."""

from __future__ import annotations

import pytest

from locscope.errors import InputError
from locscope.io import read_sequences, validate_sequence
from locscope.io.sequences import parse_deeploc_header, standardise


def test_deeploc_fasta(shared_data):
    path = shared_data / "deeploc1" / "deeploc_our_val_set.fasta"
    with pytest.raises(InputError) as err:
        read_sequences(path)
    assert str(err.value) == (f"{path}: record 'Q9C0D2': sequence length 2601 exceeds max length 2048 "
                              "(pass --truncate to keep both termini, or raise --max-length)")
    records = read_sequences(path, truncate=True)
    assert len(records) == 1678
    first = records[0]
    assert (first.id, first.labels, first.membrane, len(first)) == ("Q9Y4C2", ["Cell.membrane"], True, 921)
    assert first.sequence.startswith("MATPSAAFEALMNGVTSWDV")
    assert sum(r.truncated for r in records) == 18
    assert max(r.original_length for r in records) == 13100 and max(len(r) for r in records) == 2048
    assert sum(r.membrane is True for r in records) == 426 and sum(r.membrane is False for r in records) == 595
    dual = [r for r in records if len(r.labels) == 2]
    assert len(dual) == 23 and all(r.labels == ["Cytoplasm", "Nucleus"] for r in dual)
    assert len(read_sequences(path, max_length=None)) == 1678


def test_opencell_raw_csv(shared_data):
    path = shared_data / "localization_sequences" / "opencell_raw.csv"
    records = read_sequences(path, max_length=40000)
    assert len(records) == 1305
    assert records[0].id == "Q13685" and records[0].labels == ["cytosol"] and len(records[0]) == 434
    assert records[0].extra["target_name"] == "AAMP"
    assert [r for r in records if r.extra["target_name"] == "ACTB"][0].labels == ["cytoskeleton", "plasma-membrane"]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Q9H400 Cell.membrane-M test", {"id": "Q9H400", "labels": ["Cell.membrane"], "membrane": True, "test": True}),
        ("P1 Lysosome/Vacuole-U", {"id": "P1", "labels": ["Lysosome/Vacuole"], "membrane": None, "test": False}),
        ("P2 Cytoplasm-Nucleus-S", {"id": "P2", "labels": ["Cytoplasm", "Nucleus"], "membrane": False, "test": False}),
        ("sp|P69905|HBA_HUMAN Hemoglobin subunit alpha OS=Homo sapiens", None),
    ],
)
def test_deeploc_headers(header, expected):
    assert parse_deeploc_header(header) == expected


def test_validation_rules(tmp_path):
    assert validate_sequence(" mk vx\nbzuo* ", "r", "f") == "MKVXBZUO"
    assert standardise("MKVXBZUO") == "MKVXDECK"
    assert validate_sequence("A" * 10, "r", "f", max_length=4, truncate=True) == "AAAA"
    fasta = tmp_path / "any.fa"
    fasta.write_text(">sp|P1|X some protein\nMKV\nLLA*\n\n>P2\nmpkkkrkv\n")
    records = read_sequences(fasta)
    assert [(r.id, r.sequence, r.description) for r in records] == [
        ("sp|P1|X", "MKVLLA", "some protein"), ("P2", "MPKKKRKV", "")]
    tsv = tmp_path / "seqs.tsv"
    tsv.write_text("protein_id\tSeq\tlabel\nA1\tMKV\tnucleoplasm;cytosol\n")
    (rec,) = read_sequences(tsv)
    assert (rec.id, rec.sequence, rec.labels) == ("A1", "MKV", ["nucleoplasm", "cytosol"])


def _error(path, **kwargs) -> str:
    with pytest.raises(InputError) as err:
        read_sequences(path, **kwargs)
    return str(err.value)


def test_bad_sequence_inputs(tmp_path):
    fasta = tmp_path / "bad.fasta"
    fasta.write_text(">ok\nMKV\n>NLS_1 nuclear\nMPKKJRKV\n")
    assert _error(fasta) == (f"{fasta}: record 'NLS_1' position 5: invalid residue 'J' "
                             "(accepted: 20 standard amino acids + X B Z U O)")
    fasta.write_text(">p\nMK*V\n")
    assert _error(fasta) == f"{fasta}: record 'p' position 3: invalid residue '*' (accepted: 20 standard amino acids + X B Z U O)"
    fasta.write_text(">empty\n>p2\nMKV\n")
    assert _error(fasta) == f"{fasta}: record 'empty': empty sequence"
    fasta.write_text(">p\nMKV\n>p\nMKV\n")
    assert _error(fasta) == f"{fasta}: record 'p' appears twice"
    fasta.write_text("MKV\n>p\nMKV\n")
    assert _error(fasta) == f"{fasta}: line 1: sequence data before the first '>' header; not a FASTA file"
    fasta.write_text("")
    assert _error(fasta) == f"{fasta}: empty file"
    fasta.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    assert _error(fasta) == f"{fasta}: binary file, expected FASTA or CSV/TSV text"
    fasta.write_text(">long\n" + "A" * 30 + "\n")
    assert _error(fasta, max_length=20) == (f"{fasta}: record 'long': sequence length 30 exceeds max length 20 "
                                            "(pass --truncate to keep both termini, or raise --max-length)")
    table = tmp_path / "t.csv"
    table.write_text("id,sequence\nx1,MKV\nx2,MK1V\n")
    assert _error(table) == (f"{table}: line 3: record 'x2' position 3: invalid residue '1' "
                             "(accepted: 20 standard amino acids + X B Z U O)")
    table.write_text("id,name\nx1,MKV\n")
    assert _error(table) == (f"{table}: no sequence column (looked for sequence, seq, protein_seq, aa_sequence, "
                             "protein_sequence; columns: id, name)")


def test_deeploc_labels_map_to_level1(shared_data):
    from locscope.data.ontology import map_terms

    assert parse_deeploc_header("P1 Hemoglobin-S") is None  # not a DeepLoc class: an ordinary header
    records = read_sequences(shared_data / "deeploc1" / "deeploc_our_val_set.fasta", truncate=True)
    level1 = [map_terms(r.labels, "deeploc") for r in records]
    assert level1[0] == ["plasma-membrane"]
    assert sum(not classes for classes in level1) == 243  # Extracellular proteins have no intracellular class
    assert sum(classes == ["cytosol", "nucleoplasm"] for classes in level1) == 23


def test_gzip_fasta_and_table(tmp_path, shared_data):
    import gzip

    source = shared_data / "deeploc1" / "deeploc_our_val_set.fasta"
    packed = tmp_path / "deeploc.fasta.gz"
    packed.write_bytes(gzip.compress(source.read_bytes()))
    records = read_sequences(packed, truncate=True)
    plain = read_sequences(source, truncate=True)
    assert [(r.id, r.sequence, r.labels) for r in records] == [(r.id, r.sequence, r.labels) for r in plain]
    table = tmp_path / "s.tsv.gz"
    table.write_bytes(gzip.compress(b"id\tsequence\nA\tMKV\n"))
    assert read_sequences(table)[0].sequence == "MKV"
    cut = tmp_path / "cut.fasta.gz"
    cut.write_bytes(packed.read_bytes()[:20])
    assert _error(cut) == f"{cut}: truncated or corrupt gzip file"
