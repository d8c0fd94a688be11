"""One sequence validator for every way a sequence enters (--sequence, --template, FASTA, CSV): same letters, same
limits, same messages; long sequences usable with --truncate keeping both termini; model cropping reported."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import typer.main

from locscope.cli import app
from locscope.errors import InputError
from locscope.io.sequences import (
    keep_termini, model_crop_note, read_sequence_text, read_sequences, validate_template,
)

from conftest import error_line

EXAMPLES = Path(__file__).resolve().parents[2] / "src" / "locscope" / "assets" / "examples"
NLS = "MPKKKRKVEDA"
ACCEPTED = "(accepted: 20 standard amino acids + X B Z U O)"


def test_typed_sequences_get_the_fasta_rules(tmp_path):
    fasta = tmp_path / "p.fasta"
    for text, message in (("MKVJL", "position 4: invalid residue 'J'"), ("MK*VL", "position 3: invalid residue '*'")):
        fasta.write_text(f">sequence\n{text}\n")
        with pytest.raises(InputError) as from_file:
            read_sequences(fasta)
        with pytest.raises(InputError) as typed:
            read_sequence_text(text)
        assert str(from_file.value) == f"{fasta}: record 'sequence' {message} {ACCEPTED}"
        assert str(typed.value) == f"--sequence: record 'sequence' {message} {ACCEPTED}"
    assert read_sequence_text("mpkkkrkv*").sequence == "MPKKKRKV"  # a trailing stop codon is dropped, as in FASTA
    with pytest.raises(InputError, match="exceeds max length 2048 \\(pass --truncate to keep both termini"):
        read_sequence_text("A" * 3000)
    cut = read_sequence_text("M" + "A" * 2998 + "K", truncate=True)
    assert len(cut.sequence) == 2048 and cut.original_length == 3000 and cut.sequence[0] + cut.sequence[-1] == "MK"


def test_templates_get_the_same_rules():
    assert validate_template("mvsk<mask:3>ee<mask>*") == "MVSK<mask:3>EE<mask:1>"
    with pytest.raises(InputError, match=r"--template: position 9: invalid residue 'J'"):
        validate_template("MVSK<mask:3>EJ")  # positions count the span's 3 residues
    with pytest.raises(InputError, match=r"--template: position 5: invalid residue '\*'"):
        validate_template("MVSK*<mask:3>")
    with pytest.raises(InputError, match="template length 9 exceeds max length 8"):
        validate_template("MVSK<mask:5>", max_length=8)


def test_both_termini_are_kept():
    assert keep_termini("ABCDEFGHIJ", 4) == "ABIJ" and keep_termini("ABCDEFGHIJ", 5) == "ABCIJ"
    assert keep_termini(list(range(10)), 4) == [0, 1, 8, 9] and keep_termini("ABC", 5) == "ABC"
    assert model_crop_note(3000, 320) == "the model reads 320 of 3000 residues (the first 160 and the last 160)"
    assert model_crop_note(300, 320) is None


def test_every_sequence_command_has_the_options_its_errors_name():
    commands = typer.main.get_command(app).commands
    for name in ("generate", "explain", "inspect"):  # localize reads any length (streamed)
        options = {opt for param in commands[name].params for opt in getattr(param, "opts", ())}
        assert {"--max-length", "--truncate"} <= options, name
    build = typer.main.get_command(app).commands["dataset"].commands["build"]
    assert {"--max-length", "--truncate"} <= {o for p in build.params for o in getattr(p, "opts", ())}


def test_localize_typed_sequences_get_the_fasta_rules(tmp_path, cli):
    # a trailing '*' and lower case: the same prediction typed or from a FASTA file
    (tmp_path / "nls.fasta").write_text(f">sequence\n{NLS}\n")
    code, from_file, err = cli(["localize", "--fasta", tmp_path / "nls.fasta"])
    assert code == 0, err
    code, typed, err = cli(["localize", "--sequence", NLS.lower() + "*"])
    assert code == 0 and typed == from_file, err
    code, _, err = cli(["localize", "--sequence", "MKVJL"])
    assert code == 2 and error_line(err) == f"error: --sequence: record 'sequence' position 4: invalid residue 'J' {ACCEPTED}"


def test_generate_reports_what_the_model_reads(tmp_path, cli, caplog):
    sequence = "M" + "A" * 2998 + "K"
    args = ["generate", "--sequence", sequence, "--landmarks", EXAMPLES / "landmarks" / "cell_1", "--steps", "1",
            "--samples", "1", "--device", "cpu", "--out", tmp_path / "out"]
    code, _, err = cli(args)
    assert code == 2 and "--truncate" in error_line(err)
    with caplog.at_level(logging.WARNING, logger="locscope"):
        code, _, err = cli(args + ["--truncate"])
    assert code == 0, err
    entry = json.loads((tmp_path / "out" / "sequence" / "result.json").read_text())
    assert entry["length"] == 2048
    assert entry["model_input"] == "the model reads 320 of 2048 residues (the first 160 and the last 160)"
    assert "cut to 2048" in err and "the model reads 320 of 2048" in caplog.text
    code, _, err = cli(["generate", "--sequence", "MKV*L", "--landmarks", EXAMPLES / "landmarks" / "cell_1",
                        "--out", tmp_path / "bad"])
    assert code == 2 and "position 4: invalid residue '*'" in error_line(err) and not (tmp_path / "bad").exists()
    code, _, err = cli(["design", "--target", "nucleus", "--template", "MVSKJ<mask:4>", "--out", tmp_path / "d"])
    assert code == 2 and error_line(err).startswith("error: --template: position 5: invalid residue 'J'")


def test_level_tables_for_the_simulator_are_validated_too(tmp_path):
    from locscope.synth.labelled import read_annotated_proteins

    table = tmp_path / "levels.csv"
    header = "target_name,annotations_grade_3,annotations_grade_2,annotations_grade_1,level1,level2,level3,Sequence\n"
    table.write_text(header + "P1,nucleoplasm,,,nucleoplasm,nucleus,nucleus,mpkkkrkv*\n")
    assert read_annotated_proteins(table)[0].sequence == "MPKKKRKV"
    table.write_text(header + "P1,nucleoplasm,,,nucleoplasm,nucleus,nucleus,MPKJKRKV\n")
    with pytest.raises(InputError, match=r"levels.csv: record 'P1' position 4: invalid residue 'J'"):
        read_annotated_proteins(table)
