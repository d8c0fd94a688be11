"""A generator's condition deferring to the sequence localizer where its own fraction head hedges."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from locscope.errors import InputError
from locscope.models.celldiff import CellDiff, celldiff_tiny_config
from locscope.models.localizer import LocalizerConfig, SequenceLocalizer
from locscope.pipelines.condition import (
    PRIOR_FILE, ConditionPrior, SequenceCondition, defer_to_prior, fit_condition_prior, head_fractions,
    localizer_fractions, read_condition_prior, save_condition_prior, sequence_condition,
)
from locscope.pipelines.generate import generate

from conftest import error_line
from support import _one_thread  # noqa: F401  (autouse: one torch thread for these tiny networks)

FRACTIONS = ("nucleoplasm", "cytosol", "mitochondria")
CELL = Path(__file__).resolve().parents[2] / "src" / "locscope" / "assets" / "examples" / "landmarks" / "cell_1"
SEQUENCES = ["MPKKKRKVEDPKKKRKV", "MLSRLLRRAAPSLRRLFAAG", "MSTAYEGHLLQEAGW", "MKTAYIAKQRQISFVKSHFSRQ"]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny CELL-Diff with a three-class fraction head and a tiny localizer, saved: (generator, localizer)."""
    root = tmp_path_factory.mktemp("condition")
    torch.manual_seed(0)
    generator = CellDiff(celldiff_tiny_config(image_size=16, channels=(8, 8, 16, 16), transformer_width=32,
                                              transformer_layers=1, sequence_dim=16, sequence_layers=1,
                                              attention_groups=(False, True, True), attention_grid=2,
                                              fraction_classes=FRACTIONS))
    with torch.no_grad():
        for parameter in generator.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    generator.save_pretrained(root / "generator")
    localizer = SequenceLocalizer(LocalizerConfig(width=8, layers=1, hidden=16, n_window=16, c_window=8,
                                                  window_segments=2, max_length=64))
    with torch.no_grad():
        for parameter in localizer.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.5)
    localizer.save_pretrained(root / "localizer")
    return root / "generator", root / "localizer"


def test_defer_to_prior_mixes_only_hedging_rows():
    head = np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]], np.float32)
    prior = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]], np.float32)
    mixed = defer_to_prior(head, prior, weight=0.75, below=0.5)
    np.testing.assert_allclose(mixed, [[0.7, 0.2, 0.1], [0.1, 0.0875, 0.8125]], rtol=1e-6)
    np.testing.assert_allclose(defer_to_prior(head, prior, 0.75, 0.0), head)
    np.testing.assert_allclose(defer_to_prior(head, prior, 1.0, 1.01), prior)


def test_the_prior_file_is_read_strictly(tmp_path):
    assert read_condition_prior(tmp_path) is None
    save_condition_prior(ConditionPrior("localizer-small", "image", 0.5, 0.8), tmp_path, {"real": 0.6})
    assert read_condition_prior(tmp_path) == ConditionPrior("localizer-small", "image", 0.5, 0.8)
    (tmp_path / PRIOR_FILE).write_text(json.dumps({"localizer": "x", "weight": 0.5, "below": 0.8, "alpha": 1}))
    with pytest.raises(InputError, match="unknown config fields for ConditionPrior: alpha"):
        read_condition_prior(tmp_path)
    (tmp_path / PRIOR_FILE).write_text(json.dumps({"weight": 1.5, "below": 0.8}))
    with pytest.raises(InputError, match="weight"):
        read_condition_prior(tmp_path)
    (tmp_path / PRIOR_FILE).write_text(json.dumps({"weight": 0.5, "below": 0.8, "placement": "middle"}))
    with pytest.raises(InputError, match="placement"):
        read_condition_prior(tmp_path)
    (tmp_path / PRIOR_FILE).write_text("{")
    with pytest.raises(InputError, match="invalid JSON at line 1"):
        read_condition_prior(tmp_path)


def test_sequence_condition_follows_the_prior(models):
    from locscope.pipelines.generate import load_celldiff
    from locscope.pipelines.localize import load_localizer

    generator_dir, localizer_dir = models
    generator, localizer = load_celldiff(generator_dir), load_localizer(localizer_dir)
    head = head_fractions(generator, SEQUENCES)
    prior = localizer_fractions(localizer, SEQUENCES, FRACTIONS)
    assert head.shape == prior.shape == (4, 3)
    np.testing.assert_allclose(prior.sum(1), 1.0, rtol=1e-5)
    assert not np.allclose(head, prior)
    alone, deferred = SequenceCondition(generator)(SEQUENCES)
    np.testing.assert_array_equal(alone, head)
    assert not deferred.any()
    below = float(np.median(head.max(1)))
    mixed, deferred = SequenceCondition(generator, ConditionPrior(str(localizer_dir), None, 1.0, below))(SEQUENCES)
    np.testing.assert_array_equal(deferred, head.max(1) < below)
    np.testing.assert_allclose(mixed[deferred], prior[deferred], rtol=1e-6)
    np.testing.assert_allclose(mixed[~deferred], head[~deferred], rtol=1e-6)
    # 'head' ignores a saved prior; 'auto' reads it
    save_condition_prior(ConditionPrior(str(localizer_dir), None, 1.0, 1.01), generator_dir)
    try:
        assert sequence_condition(generator, generator_dir, "head").localizer is None
        assert sequence_condition(generator, generator_dir, "auto").localizer is not None
    finally:
        (generator_dir / PRIOR_FILE).unlink()


def test_fit_chooses_the_localizer_where_it_is_right(models):
    from locscope.models.readout import LEVEL3_CLASSES
    from locscope.pipelines.generate import load_celldiff
    from locscope.pipelines.localize import load_localizer
    from locscope.training.readout_module import level3_targets

    generator_dir, localizer_dir = models
    generator, localizer = load_celldiff(generator_dir), load_localizer(localizer_dir)
    prior = localizer_fractions(localizer, SEQUENCES, FRACTIONS)
    head = head_fractions(generator, SEQUENCES)
    labels = [{LEVEL3_CLASSES[i]} for i in level3_targets(prior, FRACTIONS, LEVEL3_CLASSES)]
    assert [LEVEL3_CLASSES[i] for i in level3_targets(head, FRACTIONS, LEVEL3_CLASSES)] != [next(iter(s)) for s in
                                                                                           labels]
    chosen, grid = fit_condition_prior(generator, {"real": (SEQUENCES, labels)}, str(localizer_dir), None)
    scores = {(g["weight"], g["below"]): g["real"] for g in grid}
    assert scores[(chosen.weight, chosen.below)] == scores[(1.0, 1.01)] == 1.0
    assert scores[(0.0, 0.0)] < 1.0 and sum(w == 0.0 for w, _ in scores) == 1


def test_generate_conditions_on_the_prior_and_says_so(models, tmp_path):
    generator_dir, localizer_dir = models
    save_condition_prior(ConditionPrior(str(localizer_dir), None, 1.0, 1.01), generator_dir)
    try:
        pairs = list(zip(["a", "b"], SEQUENCES[:2]))
        auto = generate(pairs, [CELL], tmp_path / "auto", model=str(generator_dir), samples=1, steps=2,
                        progress=False)
        head = generate(pairs, [CELL], tmp_path / "head", model=str(generator_dir), samples=1, steps=2,
                        progress=False, condition="head")
    finally:
        (generator_dir / PRIOR_FILE).unlink()
    summary = json.loads((tmp_path / "auto" / "summary.json").read_text())
    assert str(localizer_dir) in summary["condition"]
    assert json.loads((tmp_path / "head" / "summary.json").read_text())["condition"] == "the model's fraction head"
    for a, h in zip(auto.sequences, head.sequences):
        assert a["conditioned_on"]["source"] == f"fraction head + {localizer_dir}"
        assert h["conditioned_on"]["source"] == "fraction head"
        assert a["conditioned_on"]["level1"] != h["conditioned_on"]["level1"]


def test_train_condition_prior_refuses_bad_input_in_one_line(models, tmp_path, cli):
    code, _, err = cli(["train", "condition-prior", "--model", tmp_path / "missing", "--corpus", tmp_path])
    assert code == 2 and "--model" in error_line(err)
    generator_dir, _ = models
    code, _, err = cli(["train", "condition-prior", "--model", generator_dir, "--corpus", tmp_path,
                        "--placement", "middle"])
    assert code == 2 and "--placement" in error_line(err) and not (generator_dir / PRIOR_FILE).exists()
    save_condition_prior(ConditionPrior("localizer-small", "image", 0.5, 0.8), generator_dir)
    try:
        code, _, err = cli(["train", "condition-prior", "--model", generator_dir, "--corpus", tmp_path])
        assert code == 2 and "--overwrite" in error_line(err)
        assert read_condition_prior(generator_dir) == ConditionPrior("localizer-small", "image", 0.5, 0.8)
    finally:
        (generator_dir / PRIOR_FILE).unlink()


def test_train_condition_prior_on_the_corpus(models, shared_data, cli):
    generator_dir, localizer_dir = models
    try:
        code, _, err = cli(["train", "condition-prior", "--model", generator_dir, "--corpus", shared_data,
                            "--localizer", localizer_dir, "--label-style", "uniprot", "--grammar", "40"])
        assert code == 2 and "--label-style" in error_line(err) and not (generator_dir / PRIOR_FILE).exists()
        code, out, err = cli(["train", "condition-prior", "--model", generator_dir, "--corpus", shared_data,
                              "--localizer", localizer_dir, "--label-style", "reference", "--grammar", "40"])
        assert code == 0, err
        saved = json.loads((generator_dir / PRIOR_FILE).read_text())
        validation = saved["_meta"]["validation"]
        assert validation["proteins"] == {"real": 278, "grammar": 40}
        assert validation["chosen"]["mean"] >= validation["head alone"]["mean"]
        assert f"weight {saved['weight']:g} below {saved['below']:g}" in out
    finally:
        (generator_dir / PRIOR_FILE).unlink(missing_ok=True)


def test_the_model_folder_chooses_the_default_placement(models, tmp_path):
    generator_dir, _ = models
    save_condition_prior(ConditionPrior("localizer-small", "image", 0.0, 0.0, placement="top"), generator_dir)
    try:
        pairs = [("a", SEQUENCES[0])]
        generate(pairs, [CELL], tmp_path / "default", model=str(generator_dir), samples=2, steps=2, progress=False)
        generate(pairs, [CELL], tmp_path / "soft", model=str(generator_dir), samples=2, steps=2, progress=False,
                 placement="soft")
        generate(pairs, [CELL], tmp_path / "head", model=str(generator_dir), samples=2, steps=2, progress=False,
                 condition="head")
    finally:
        (generator_dir / PRIOR_FILE).unlink()
    placements = {name: json.loads((tmp_path / name / "summary.json").read_text())["placement"]
                  for name in ("default", "soft", "head")}
    assert placements == {"default": "top", "soft": "soft", "head": "top"}
    default = json.loads((tmp_path / "default" / "a" / "result.json").read_text())
    assert default["conditioned_on"]["source"] == "fraction head"
    # the top placement names the one compartment every sample was conditioned on: the distribution's largest
    level1 = default["conditioned_on"]["level1"]
    assert default["conditioned_on"]["placed_in"] == max(level1, key=level1.get)
    soft = json.loads((tmp_path / "soft" / "a" / "result.json").read_text())
    assert "placed_in" not in soft["conditioned_on"]
