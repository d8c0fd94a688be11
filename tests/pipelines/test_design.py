"""``locscope design``: templates, bad input, target- and image-conditioned design with a tiny model."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

from locscope.encoders.protein import MASK_ID, VOCAB
from locscope.pipelines.design import build_template
from test_design_support import cli_run, tiny_celldiff, tiny_designer_dir, tiny_model_dir  # noqa: F401  (fixture)


def test_build_template():
    ids = build_template("MVSK<mask:3>EE")
    assert [VOCAB[i] if i != MASK_ID else "?" for i in ids] == list("MVSK???EE")
    assert build_template(length=5) == [MASK_ID] * 5
    assert build_template("MVSK", terminus="C", terminus_length=4)[-4:] == [MASK_ID] * 4
    assert build_template("MVSK", terminus="N", terminus_length=2)[:3] == [MASK_ID, MASK_ID, VOCAB.index("M")]


@pytest.mark.parametrize("options, message", [
    ({"target": "nucleus", "length": 0}, "^length 0: must be between 1 and 2048$"),
    ({"target": "nucleus", "template": "MVSKJ<mask:3>"}, "^template: position 5: invalid residue 'J'"),
    ({"target": "nucleus", "template": "MVSK"}, "^template has no <mask> or <mask:N> span and no terminus is given"),
    ({"length": 9}, "^target or image: give target COMPARTMENT, or image PROTEIN_IMAGE with landmarks FILES$"),
    ({"target": "nucleus", "length": 9, "refine_rounds": -1}, r"^refine_rounds -1: must be >= 0$"),
])
def test_library_errors_name_the_python_arguments(tmp_path, options, message):
    from locscope.errors import ArgumentError
    from locscope.pipelines.design import design

    with pytest.raises(ArgumentError, match=message):
        design(tmp_path / "o", progress=False, **options)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args,message", [
    (["--target", "nucleus", "--template", "MVSKGEELF"], "no <mask>"),
    (["--target", "nucleus", "--length", "0"], "--length 0"),
    (["--target", "nucleus", "--length", "2049"], "--length 2049"),
    (["--target", "nucleous", "--length", "10"], "unknown compartment 'nucleous'"),
    (["--target", "nucleus", "--template", "MVS1<mask:4>"], "position 4"),
    (["--target", "nucleus", "--template", "MV<mask:3>", "--terminus", "X"], "--terminus 'X'"),
    (["--length", "10"], "--image PROTEIN_IMAGE"),
    (["--target", "nucleus", "--length", "10", "--designer", "no/such/dir"], "--designer no/such/dir: no sequence"),
    (["--target", "nucleus", "--length", "10", "--proposer", "esm"], "--proposer 'esm'"),
    (["--target", "nucleus", "--length", "10", "nucleus.png"], "nucleus.png: landmark files are given with --landmarks; "
     "--landmarks a.png b.png c.png (one option, several files), a repeated --landmarks, or a folder"),
])
def test_bad_input_is_one_line_with_exit_code_2(tmp_path, capsys, args, message):
    assert cli_run(["design", "--out", str(tmp_path / "o"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_target_design_infills_the_template_and_ranks(tmp_path):
    model, designer = tiny_model_dir(tmp_path), tiny_designer_dir(tmp_path)
    out = tmp_path / "design"
    template = "MVSKGEELFTG<mask:6>"
    assert cli_run(["design", "--out", str(out), "--model", str(model), "--target", "nucleus", "--template", template,
                    "--candidates", "5", "--batch-size", "3", "--score-samples", "1", "--steps", "2", "--seed", "3",
                    "--designer", str(designer)]) == 0
    rows = list(csv.DictReader((out / "candidates.csv").open()))
    assert len(rows) == 5
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    assert scores[0] == pytest.approx(float(rows[0]["p3_nucleus"]), abs=1e-3)
    for row in rows:
        assert row["sequence"].startswith("MVSKGEELFTG") and len(row["sequence"]) == 17
        assert set(row["sequence"]) <= set("ACDEFGHIKLMNPQRSTVWY")
    fasta = (out / "candidates.fasta").read_text()
    assert fasta.count(">design_") == 5 and "score=" in fasta
    summary = json.loads((out / "summary.json").read_text())
    assert summary["decoder"] == "parallel" and summary["passes_per_candidate"] == 6.0
    assert summary["proposer"] == "designer"
    assert (out / "report.html").read_text().count("<img") >= 6
    again = tmp_path / "again"
    assert cli_run(["design", "--out", str(again), "--model", str(model), "--target", "nucleus", "--template", template,
                    "--candidates", "5", "--batch-size", "3", "--score-samples", "1", "--steps", "2", "--seed", "3",
                    "--designer", str(designer)]) == 0
    assert (again / "candidates.fasta").read_text() == fasta
    # CELL-Diff's own masked-residue head as the proposer (conditioned on the target's images)
    head = tmp_path / "head"
    assert cli_run(["design", "--out", str(head), "--model", str(model), "--target", "nucleus", "--template", template,
                    "--candidates", "3", "--score-samples", "1", "--steps", "2", "--proposer", "celldiff"]) == 0
    summary = json.loads((head / "summary.json").read_text())
    assert summary["proposer"] == "celldiff" and len(summary["candidates"]) == 3


def test_image_design_with_the_reference_decoder(tmp_path):
    model = tiny_model_dir(tmp_path)
    rng = np.random.default_rng(0)
    files = []
    for name in ("protein", "nucleus", "ER"):
        path = tmp_path / f"{name}.png"
        Image.fromarray((rng.random((24, 24)) * 255).astype(np.uint8)).save(path)
        files.append(path)
    out = tmp_path / "design"
    assert cli_run(["design", "--out", str(out), "--model", str(model), "--image", str(files[0]), "--landmarks",
                    str(files[1]), "--landmarks", str(files[2]), "--length", "7", "--candidates", "2",
                    "--decoder", "one-per-pass", "--score-samples", "1", "--steps", "2",
                    "--designer", str(tiny_designer_dir(tmp_path))]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["passes_per_candidate"] == 7.0 and "Pearson" in summary["score_method"]
    assert len(summary["image_compartments"]) == 3  # what the image shows, the designer's condition
    assert all(len(c["sequence"]) == 7 and -1 <= c["score"] <= 1 for c in summary["candidates"])
    # refinement with an image: the target is the compartment distribution the image shows
    refined = tmp_path / "refined"
    assert cli_run(["design", "--out", str(refined), "--model", str(model), "--image", str(files[0]), "--landmarks",
                    str(files[1]), "--length", "7", "--candidates", "4", "--refine-rounds", "2", "--score-samples", "1",
                    "--steps", "2", "--proposer", "celldiff"]) == 0
    summary = json.loads((refined / "summary.json").read_text())
    assert summary["refine_rounds"] == 2 and len(summary["best_head_score_per_round"]) == 3


def test_image_target_distribution(tiny_celldiff):
    from locscope.errors import InputError
    from locscope.models.celldiff import CellDiff
    from locscope.pipelines.design import image_target_distribution, target_conditioning

    protein, landmarks, _ = target_conditioning(tiny_celldiff, "nucleoplasm", n_cells=1)
    first = image_target_distribution(tiny_celldiff, protein[0], landmarks[0], noise_draws=3, seed=0)
    again = image_target_distribution(tiny_celldiff, protein[0], landmarks[0], noise_draws=3, seed=0)
    assert first.shape == (len(tiny_celldiff.config.fraction_classes),) and np.isclose(first.sum(), 1.0)
    assert np.array_equal(first, again) and (first > 0).all()
    seed_like = CellDiff(dataclasses.replace(tiny_celldiff.config, fraction_classes=()))
    with pytest.raises(InputError, match="compartment bottleneck"):
        image_target_distribution(seed_like, protein[0], landmarks[0])


@pytest.mark.parametrize("compartment", ["nucleoplasm", "cytosol"])
def test_the_bundled_model_reads_the_compartment_an_image_shows(compartment):
    """The diffusion classifier on held-out simulator images (cells never used in training), bundled celldiff-tiny."""
    from locscope.pipelines.design import image_target_distribution
    from locscope.pipelines.generate import load_celldiff
    from locscope.synth import SimulatorConfig, place_protein, render_cell

    model = load_celldiff(None)
    cell = render_cell(SimulatorConfig(size=model.config.image_size), seed=910_001)
    protein = place_protein(cell, {compartment: 1.0}, seed=910_001)
    landmarks = np.stack([cell.images[c] for c in model.config.landmark_channels])
    shown = image_target_distribution(model, protein, landmarks, seed=0)
    assert model.config.fraction_classes[int(np.argmax(shown))] == compartment, shown


def test_head_guided_refinement_never_loses_the_best_and_keeps_the_template(tiny_celldiff):
    from locscope.pipelines.design import head_target_scores, refine_candidates, target_conditioning

    template = build_template("MVSKGEE<mask:8>")
    protein, landmarks, _ = target_conditioning(tiny_celldiff, "nucleoplasm", n_cells=2)
    start = ["MVSKGEE" + s for s in ("AAAAAAAA", "KKKRKVPG", "LLLLLLLL", "GSGSGSGS", "DEDEDEDE", "PKKKRKVE")]
    final, passes, history = refine_candidates(tiny_celldiff, start, template, "nucleoplasm", protein, landmarks,
                                               rounds=3, fraction=0.5, passes=4, seed=1)
    assert len(final) == len(start) and passes == 3 * 4  # one parallel decode of the children per round: 4 masked positions, 4 passes
    assert all(s.startswith("MVSKGEE") and len(s) == 15 for s in final)
    # elitism: the best head score never drops (up to float noise from batch composition)
    assert len(history) == 4 and all(later >= earlier - 1e-6 for earlier, later in zip(history, history[1:]))
    assert history[-1] == pytest.approx(float(head_target_scores(tiny_celldiff, final, "nucleoplasm").max()), abs=1e-6)
    assert history[0] == pytest.approx(float(head_target_scores(tiny_celldiff, start, "nucleoplasm").max()), abs=1e-6)
    # level-3 targets go through the heads' level-3 probabilities
    assert head_target_scores(tiny_celldiff, start, "nucleus").shape == (6,)
