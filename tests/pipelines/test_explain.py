"""``locscope explain``: in-silico mutagenesis finds planted localization signals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from locscope.pipelines.explain import mutagenesis_scan, mutate_window
from locscope.pipelines.readout import LEVEL3_CLASSES, level_probabilities
from locscope.synth import COMPARTMENTS
from locscope.synth.grammar import localize_sequence, random_protein
from test_design_support import cli_run, tiny_model_dir


def grammar_scorer(sequences):
    """A toy predictor: the simulator's motif grammar, as level-3 probabilities."""
    shares = np.array([[localize_sequence(s).compartments.get(c, 0.0) for c in COMPARTMENTS] for s in sequences])
    return level_probabilities(shares)[0]


@pytest.mark.parametrize("target,seed", [("nucleoplasm", 0), ("mitochondria", 1), ("plasma-membrane", 1), ("endoplasmic-reticulum", 1)])
def test_scan_finds_the_planted_motif(target, seed):
    sequence, motifs = random_protein({target: 1.0}, np.random.default_rng(seed), length=150)
    scan = mutagenesis_scan(grammar_scorer, sequence, window=5, stride=1)
    top = scan.segments(1)[0]
    assert any(top.start - 1 < end and start < top.end for _, start, end in motifs), (top, motifs)
    truth = np.zeros(len(sequence), bool)
    for _, start, end in motifs:
        truth[start:end] = True
    # residues inside the motifs carry more attribution than the rest
    assert scan.attribution[truth].mean() > scan.attribution[~truth].mean() + 0.1
    assert "localization" in top.describe(scan.compartment)


def test_mutate_window_and_errors():
    assert mutate_window("MGKKRA", 1, 4) == "MAGGGA"
    assert mutate_window("MAKKRA", 1, 4, substitute="A") == "MGAAAA"
    with pytest.raises(Exception, match="window=9 is longer"):
        mutagenesis_scan(grammar_scorer, "MPKKKRKV", window=9)
    with pytest.raises(Exception, match="target 'golgi'"):
        mutagenesis_scan(grammar_scorer, "MPKKKRKVAAA", window=3, target="golgi")
    scan = mutagenesis_scan(grammar_scorer, "M" + "SG" * 10 + "PKKKRKV" + "GS" * 10, window=7, stride=3,
                            target="nucleus")
    assert scan.starts[-1] == len(scan.sequence) - 7 and scan.compartment == "nucleus"
    assert scan.wild_type[LEVEL3_CLASSES.index("nucleus")] == 1.0


def test_explain_cli_writes_the_report(tmp_path, capsys):
    model = tiny_model_dir(tmp_path)
    out = tmp_path / "explain"
    sequence = "MPKKKRKVEDAAAGLSSKDEL"
    assert cli_run(["explain", "--sequence", sequence, "--out", str(out), "--model", str(model), "--window", "5",
                    "--stride", "4", "--samples", "1", "--steps", "2"]) == 0
    payload = json.loads((out / "explain.json").read_text())
    assert len(payload["attribution"]) == len(sequence)
    assert payload["explained_class"] in LEVEL3_CLASSES
    assert abs(sum(payload["wild_type"].values()) - 1.0) < 1e-3
    for name in ("track.png", "wild_type.png", "mutant.png", "report.html"):
        assert (out / name).stat().st_size > 100
    assert cli_run(["explain", "--sequence", "MPK<mask:3>", "--out", str(out), "--model", str(model)]) == 2
    assert "no <mask>" in capsys.readouterr().err


def test_explain_with_the_localizer_finds_a_signal_peptide(tmp_path):
    """The bundled localizer on a real reporter: mutating the preprolactin signal peptide removes the secretory
    pathway (endomembrane-system) prediction, so the strongest segment lies in it."""
    from locscope.data.signals import PANEL

    fusion = next(s for s in PANEL if s.name.startswith("preprolactin")).fuse()
    out = tmp_path / "explain"
    assert cli_run(["explain", "--sequence", fusion, "--out", str(out), "--method", "localizer", "--window", "7",
                    "--stride", "3", "--target", "endomembrane-system"]) == 0
    payload = json.loads((out / "explain.json").read_text())
    assert payload["method"] == "localizer" and payload["explained_class"] == "endomembrane-system"
    assert payload["segments"][0]["start"] <= 35  # the signal peptide is residues 1-35
    assert not (out / "wild_type.png").exists() and (out / "report.html").stat().st_size > 1000
