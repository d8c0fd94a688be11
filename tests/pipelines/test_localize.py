"""``locscope localize``: unmixing compartments off simulator cells, the predictor, the CSV and the CLI."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from locscope.pipelines.localize import LocalizationPredictor
from locscope.pipelines.readout import (
    LEVEL2_CLASSES, LEVEL3_CLASSES, level_probabilities, resolve_compartment, standard_cells, unmix_compartments,
)
from locscope.synth import COMPARTMENTS, place_protein
from test_design_support import cli_run, tiny_celldiff, tiny_model_dir  # noqa: F401  (fixture)
from support import save_tiny_esm2


def test_unmixing_recovers_known_level3_fractions():
    cells = standard_cells(32, ("nucleus", "er", "microtubules"), 3)
    cases = [{"nucleoplasm": 1.0}, {"mitochondria": 0.6, "cytosol": 0.4}, {"plasma-membrane": 0.5, "nucleoli": 0.5}]
    for k, (cell, fractions) in enumerate(zip(cells, cases)):
        image = place_protein(cell.cell, fractions, seed=k)
        shares = unmix_compartments(image, cell)
        assert shares.shape == (len(COMPARTMENTS),) and np.isclose(shares.sum(), 1.0)
        level3, level2 = level_probabilities(shares)
        truth, _ = level_probabilities(np.array([fractions.get(c, 0.0) for c in COMPARTMENTS]))
        assert 0.5 * np.abs(level3 - truth).sum() < 0.1, (fractions, level3.round(2))
        assert np.isclose(level2.sum(), 1.0)


def test_resolve_compartment():
    assert resolve_compartment("Nucleus") == ("level3", "nucleus")
    assert resolve_compartment("golgi apparatus") == ("level2", "golgi-apparatus")
    assert resolve_compartment("nucleoplasm") == ("level1", "nucleoplasm")
    with pytest.raises(Exception, match="unknown compartment 'nucleous'"):
        resolve_compartment("nucleous")


def test_predictor_is_batch_independent_and_normalised(tiny_celldiff):
    predictor = LocalizationPredictor(tiny_celldiff, "combined", samples=2, steps=2, batch_size=2, seed=0)
    seqs = ["MPKKKRKVEDAAAGLSS", "MLSRAVCGTSRQLAPVLGYLGSRQKHSLPD", "MGCINSKRKDNLNDDGVDCALLKKL"]
    both = predictor.predict(seqs, keep_images=True)
    alone = predictor.predict(seqs[1:2])
    assert np.allclose(both.level3[1], alone.level3[0], atol=1e-5)
    assert np.allclose(both.level3.sum(1), 1.0, atol=1e-5)
    assert np.allclose(np.nansum(both.level2, 1), 1.0, atol=1e-5)
    assert both.images.shape == (3, 2, 16, 16) and both.images.min() >= 0 and both.images.max() <= 1
    head = LocalizationPredictor(tiny_celldiff, "head").predict(seqs)
    assert np.allclose(head.level3.sum(1), 1.0, atol=1e-5) and head.images is None
    predictor_defaults = LocalizationPredictor(tiny_celldiff, "head")
    assert (predictor_defaults.steps, predictor_defaults.guidance) == (10, 2.0)  # CELL-Diff's generate defaults
    # a fraction head (level-1 distribution) gives level-2 probabilities too, consistent with level 3
    assert tiny_celldiff.config.fraction_classes and np.allclose(head.level2.sum(1), 1.0, atol=1e-5)
    image = LocalizationPredictor(tiny_celldiff, "image", samples=2, steps=2, seed=0).predict(seqs)
    assert np.allclose(both.level3, 0.5 * head.level3 + 0.5 * image.level3, atol=1e-5)
    assert np.allclose(both.level2, 0.5 * head.level2 + 0.5 * image.level2, atol=1e-5)


def test_head_without_a_fraction_head_leaves_the_endomembrane_split_empty():
    import torch

    from locscope.models.celldiff import CellDiff, celldiff_tiny_config

    torch.manual_seed(0)
    model = CellDiff(celldiff_tiny_config(image_size=16, channels=(8, 8, 16, 16), transformer_width=32,
                                          transformer_layers=1, sequence_dim=16, sequence_layers=1, attention_grid=2,
                                          fraction_classes=())).eval()
    head = LocalizationPredictor(model, "head").predict(["MPKKKRKVEDAAAGLSS", "MLSRAVCGTSRQ"])
    assert np.allclose(head.level3.sum(1), 1.0, atol=1e-5)
    assert np.isnan(head.level2[:, LEVEL2_CLASSES.index("golgi-apparatus")]).all()


def test_localize_cli_fasta_and_errors(tmp_path, capsys):
    model = tiny_model_dir(tmp_path)
    fasta = tmp_path / "in.fasta"
    fasta.write_text(">nls\nMPKKKRKVEDAAAGLSS\n>mito\nMLSRAVCGTSRQLAPVLGYLGSRQ\n")
    out = tmp_path / "preds.csv"
    assert cli_run(["localize", "--fasta", str(fasta), "--out", str(out), "--model", str(model), "--samples", "1",
                    "--steps", "2"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["id"] for r in rows] == ["nls", "mito"]
    assert rows[0]["top_level3"] in LEVEL3_CLASSES
    assert abs(sum(float(rows[0][f"p3_{c}"]) for c in LEVEL3_CLASSES) - 1.0) < 1e-3
    capsys.readouterr()
    for args, message in [(["--sequence", "MPKK1RKV"], "position 5"), ([], "exactly one of"),
                          (["--sequence", "MPKKRKV", "--method", "magic"], "method='magic'")]:
        assert cli_run(["localize", *args, "--model", str(model)]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert cli_run(["localize", "--sequence", "MPKKRKV", "--model", str(tmp_path / "nope")]) == 2
    assert "--model" in (err := capsys.readouterr().err) and "no model at" in err and "localizer-small" in err


def test_localize_and_design_with_a_tiny_esm2_model(tmp_path):
    """The ESM2 code path: a CELL-Diff whose protein encoder is a (tiny, random) local ESM2 checkpoint."""
    from locscope.encoders.protein import MASK_ID
    from locscope.models.celldiff import CellDiff, celldiff_tiny_config
    from locscope.pipelines.design import decode_candidates

    save_tiny_esm2(tmp_path / "esm")  # seeds torch with 0 first
    config = celldiff_tiny_config(image_size=16, channels=(8, 8, 16, 16), transformer_width=32, transformer_layers=1,
                                  transformer_heads=2, attention_heads=2, protein_encoder="esm2",
                                  esm_path=str(tmp_path / "esm"))
    model = CellDiff(config).eval()
    prediction = LocalizationPredictor(model, "combined", samples=1, steps=2).predict(["MPKKKRKVEDA", "MLSRAVCGTSRQ"])
    assert prediction.level3.shape == (2, 7) and np.allclose(prediction.level3.sum(1), 1.0, atol=1e-5)
    cells = standard_cells(16, config.landmark_channels, 1)
    sequences, passes = decode_candidates(model, [MASK_ID] * 10, np.zeros((1, 16, 16), np.float32),
                                          cells[0].landmarks[None], None, candidates=2, passes=4)
    assert passes == 4 and all(len(s) == 10 and "<" not in s for s in sequences)


def test_localize_honours_a_missing_landmark():
    """localize samples through the one CELL-Diff sampler: an absent landmark gets the model's placeholder."""
    import torch

    from locscope.diffusion.celldiff_sampler import sample_protein_images
    from locscope.models import hub

    net = hub.load("celldiff-tiny")
    sequences = ["MPKKKRKVEDPRLQ" * 3]
    options = dict(samples=2, steps=2, seed=0)
    full = LocalizationPredictor(net, "image", **options).predict(sequences, keep_images=True)
    predictor = LocalizationPredictor(net, "image", landmark_present=[True, False, True], **options)
    missing = predictor.predict(sequences, keep_images=True)
    tokens = net.tokenize(sequences)[0].repeat_interleave(2, dim=0)
    present = torch.tensor([[True, False, True]] * 2)
    expected, nfe = sample_protein_images(net, predictor.landmarks, tokens, present, steps=2, noise=predictor.noise)
    assert nfe == 4 and missing.images.shape == (1, 2, 32, 32)
    np.testing.assert_allclose(missing.images[0], (expected[:, 0].numpy() + 1) / 2, atol=1e-5)
    assert np.abs(missing.images - full.images).max() > 0.05   # the ER placeholder changes the images
    np.testing.assert_allclose(missing.level3.sum(), 1.0, atol=1e-6)
