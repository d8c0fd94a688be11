"""SubCell training: losses, protein batches, a tiny end-to-end run with resume, the default image encoder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from locscope.errors import InputError
from locscope.models.subcell import SUBCELL_CLASS_NAMES, SubCellModel
from locscope.training.subcell_module import (
    ProteinBatchSampler, augment, classification_metrics, fit_classifier_ensemble, knn_accuracy, nt_xent,
    random_patch_mask, supervised_contrastive, train_subcell,
)


def test_nt_xent_prefers_matching_views():
    torch.manual_seed(0)
    z = torch.randn(8, 16)
    aligned = nt_xent(z, z + 0.01 * torch.randn(8, 16), temperature=0.1)
    shuffled = nt_xent(z, z[torch.randperm(8)], temperature=0.1)
    assert aligned < 0.1 < shuffled
    # Two orthogonal pairs: the positive has similarity 1, the 2 negatives 0 -> -log(e^10 / (e^10 + 2)).
    z1 = torch.eye(2)
    assert float(nt_xent(z1, z1.clone(), temperature=0.1)) == pytest.approx(-np.log(np.e**10 / (np.e**10 + 2)), rel=1e-3)


def test_supervised_contrastive_uses_protein_groups():
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    good = supervised_contrastive(z, torch.tensor([0, 0, 1, 1]), temperature=0.1)
    bad = supervised_contrastive(z, torch.tensor([0, 1, 0, 1]), temperature=0.1)
    assert good < 1e-3 and bad > 5
    assert float(supervised_contrastive(z, torch.tensor([0, 1, 2, 3]))) == 0.0  # no positives


def test_protein_batches_keep_proteins_together():
    protein = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    sampler = ProteinBatchSampler(protein, batch_size=4, seed=3)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(10))
    for batch in batches:
        assert all((protein[batch] == p).sum() == 2 for p in protein[batch].unique())
    sampler.set_epoch(0)
    assert list(sampler) == batches  # an epoch's batches depend only on (seed, epoch)
    sampler.set_epoch(1)
    assert list(sampler) != batches


def test_augment_and_mask_shapes():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(3, 4, 16, 16)
    out = augment(images, generator)
    assert out.shape == images.shape and not torch.equal(out, images)
    mask = random_patch_mask(5, (4, 4), 0.25, generator)
    assert mask.shape == (5, 4, 4) and torch.all(mask.flatten(1).sum(1) == 4)


def test_classifier_ensemble_learns_separable_classes():
    torch.manual_seed(0)
    labels = torch.zeros(60, 31)
    labels[torch.arange(60), torch.arange(60) % 3] = 1
    embeddings = labels[:, :3] @ torch.randn(3, 12) * 3 + 5 + 0.1 * torch.randn(60, 12)  # offset: checks folding
    heads = fit_classifier_ensemble(embeddings, labels, hidden=(16,), num_classifiers=2, steps=150)
    assert [type(m).__name__ for m in heads[0]] == ["Linear", "ReLU", "Linear"]
    with torch.no_grad():
        probs = torch.stack([h(embeddings).sigmoid() for h in heads]).mean(0).numpy()
    metrics = classification_metrics(probs, labels.numpy())
    assert metrics["accuracy"] == 1.0 and metrics["macro_ap"] > 0.99 and metrics["n_classes_present"] == 3
    assert knn_accuracy(embeddings[:30], labels[:30], embeddings[30:], labels[30:], k=3) == 1.0


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    from locscope.synth import SimulatorConfig, simulate_store

    path = tmp_path_factory.mktemp("subcell") / "store"
    simulate_store(path, 24, SimulatorConfig(size=32), seed=1, cells_per_protein=2, progress=False)
    return path


def test_train_subcell_end_to_end_and_resume(tiny_store, tmp_path):
    tiny = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, pool_inner_dim=8,
                classifier_hidden=(8,))
    settings = dict(model_config=tiny, batch_size=8, num_classifiers=2, classifier_steps=20, device="cpu",
                    threads=1, progress=False, seed=0)
    metrics = train_subcell(tiny_store, tmp_path / "run", epochs=1, **settings)
    assert {"macro_ap", "accuracy", "knn_accuracy"} <= set(metrics)
    assert 0 <= metrics["accuracy"] <= 1 and metrics["epochs_completed"] == 1
    model = SubCellModel.from_pretrained(tmp_path / "run" / "model")
    assert len(model.classifiers) == 2 and model.config.image_size == 32 and model.config.patch_size == 8
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["metrics"]["macro_ap"] == pytest.approx(metrics["macro_ap"])
    # Resume: a second epoch continues from last.ckpt; the same 2 epochs in one go give the same encoder.
    resumed = train_subcell(tiny_store, tmp_path / "run", epochs=2, resume=True, **settings)
    assert resumed["epochs_completed"] == 2
    train_subcell(tiny_store, tmp_path / "straight", epochs=2, **settings)
    a = SubCellModel.from_pretrained(tmp_path / "run" / "model").state_dict()
    b = SubCellModel.from_pretrained(tmp_path / "straight" / "model").state_dict()
    for key in a:
        if key.startswith("encoder."):
            torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4)
    with pytest.raises(InputError, match="no checkpoint to resume from"):
        train_subcell(tiny_store, tmp_path / "fresh", epochs=1, resume=True, **settings)
