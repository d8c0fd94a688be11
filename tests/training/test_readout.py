"""The compartment read-out classifier: targets, training on a store, strict loading, use in generate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from locscope.data.ontology import SIMULATOR_COMPARTMENTS
from locscope.errors import CheckpointError, InputError
from locscope.models.readout import LEVEL3_CLASSES, ReadoutClassifier, ReadoutConfig
from locscope.pipelines.readout import classify_level3
from locscope.training.readout_module import ReadoutTrainConfig, level3_targets, train_readout


def fractions(**shares) -> np.ndarray:
    row = np.zeros(len(SIMULATOR_COMPARTMENTS), np.float32)
    for name, value in shares.items():
        row[SIMULATOR_COMPARTMENTS.index(name.replace("_", "-"))] = value
    return row


def test_targets_sum_level1_fractions_per_level3_class():
    rows = np.stack([fractions(nucleoplasm=0.3, nuclear_speckles=0.3, cytosol=0.4),   # nucleus 0.6
                     fractions(vesicles=0.2, golgi_apparatus=0.2, mitochondria=0.35, cytosol=0.25),  # endomembrane 0.4
                     fractions(plasma_membrane=1.0), np.zeros(len(SIMULATOR_COMPARTMENTS), np.float32)])
    targets = level3_targets(rows)
    assert [LEVEL3_CLASSES[t] for t in targets[:3]] == ["nucleus", "endomembrane-system", "plasma-membrane"]
    assert targets[3] == -1  # unknown fractions


def test_training_learns_a_separable_task_and_loads_strictly(tmp_path):
    # nucleus-like (bright centre) vs plasma-membrane-like (bright rim) protein images
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:16, :16]
    radius = np.hypot(yy - 7.5, xx - 7.5)
    centre, rim = (radius < 4).astype(np.float32), ((radius > 5.5) & (radius < 7.5)).astype(np.float32)
    images, rows = [], []
    for k in range(64):
        protein = (centre if k % 2 == 0 else rim) + 0.2 * rng.random((16, 16))
        images.append(np.stack([protein, centre, rng.random((16, 16)), rng.random((16, 16))]).astype(np.float32))
        rows.append(fractions(nucleoplasm=1.0) if k % 2 == 0 else fractions(plasma_membrane=1.0))
    images, rows = np.stack(images), np.stack(rows)
    config = ReadoutTrainConfig(image_size=16, width=4, steps=60, batch_size=16, learning_rate=5e-3)
    directory, metrics = train_readout(images[:48], rows[:48], images[48:], rows[48:], config, tmp_path / "m")
    assert metrics["val_accuracy"] == 1.0 and metrics["train_items"] == 48
    model = ReadoutClassifier.from_pretrained(directory)
    probabilities = classify_level3(model, images[48:, 0], images[48:, 1:], ("nucleus", "er", "microtubules"))
    assert probabilities.shape == (16, len(LEVEL3_CLASSES))
    assert np.allclose(probabilities.sum(1), 1.0, atol=1e-5)
    with pytest.raises(InputError, match="no training item"):
        train_readout(images, np.zeros_like(rows), images, rows, config, tmp_path / "none")
    other = ReadoutClassifier(ReadoutConfig(image_size=16, width=8))
    other.save_pretrained(tmp_path / "other")
    (tmp_path / "other" / "config.json").write_text((directory / "config.json").read_text())
    with pytest.raises(CheckpointError, match="misshaped"):
        ReadoutClassifier.from_pretrained(tmp_path / "other")


def test_missing_landmarks_are_zeros_and_any_size_is_resized():
    torch.manual_seed(0)
    model = ReadoutClassifier(ReadoutConfig(image_size=16, width=4)).eval()
    protein = np.random.default_rng(1).random((2, 32, 32)).astype(np.float32)
    nucleus = np.random.default_rng(2).random((1, 32, 32)).astype(np.float32)
    only_nucleus = classify_level3(model, protein, nucleus, ("nucleus",))
    zeros = np.zeros((3, 32, 32), np.float32)
    zeros[0] = nucleus[0]
    assert np.allclose(only_nucleus, classify_level3(model, protein, zeros, ("nucleus", "er", "microtubules")))
