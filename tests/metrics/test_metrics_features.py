"""Feature-space metrics: NN match, k-NN accuracy, classification agreement, cytoself cluster score."""

import numpy as np
import pytest

from locscope.metrics.features import (
    classification_agreement, cluster_score, cosine_similarity, knn_accuracy, knn_predict, nn_match,
)


def test_cosine_and_nn_match_hand_computed():
    real = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    generated = np.array([[2.0, 0.1], [0.1, 3.0]])
    sims = cosine_similarity(generated, real)
    assert sims.shape == (2, 3)
    assert sims[0, 0] == pytest.approx(2 / np.hypot(2, 0.1))
    np.testing.assert_array_equal(nn_match(generated, real, ["a", "x"], ["a", "b", "c"], k=1), [True, False])
    # top-2 of item 1 is (b, c): "x" still missing; top-3 covers every real label
    np.testing.assert_array_equal(nn_match(generated, real, ["a", "c"], ["a", "b", "c"], k=2), [True, True])


def test_knn_majority_vote():
    real = np.array([[1.0, 0.0], [0.9, 0.1], [0.8, 0.3], [0.0, 1.0]])
    labels = ["n", "c", "c", "m"]
    generated = np.array([[1.0, 0.05]])
    assert knn_predict(generated, real, labels, k=1) == ["n"]
    assert knn_predict(generated, real, labels, k=3) == ["c"]
    assert knn_accuracy(generated, real, ["c"], labels, k=3) == 1.0
    with pytest.raises(ValueError, match="k=9"):
        knn_predict(generated, real, labels, k=9)


def test_classification_agreement_separable_classes():
    rng = np.random.default_rng(0)
    centres = {"nucleus": [5.0, 0.0], "cytosol": [0.0, 5.0], "mitochondria": [-5.0, -5.0]}
    real, real_labels, gen, gen_labels = [], [], [], []
    for name, centre in centres.items():
        real.append(rng.normal(centre, 0.5, size=(20, 2)))
        real_labels += [name] * 20
        gen.append(rng.normal(centre, 0.5, size=(5, 2)))
        gen_labels += [name] * 5
    gen_labels[-1] = "nucleus"   # one generated mitochondria image whose true compartment is nucleus
    result = classification_agreement(np.vstack(real), real_labels, np.vstack(gen), gen_labels)
    assert result.accuracy == pytest.approx(14 / 15)
    assert result.classes == ["cytosol", "mitochondria", "nucleus"]
    assert result.confusion.sum() == 15
    assert result.confusion[2, 1] == 1      # true nucleus predicted mitochondria
    assert np.trace(result.confusion) == 14


def test_cluster_score_hand_computed():
    # two classes, each 3 points on a line around its centre: sizes = median(|-1|, 0, 1) = 1
    points = np.array([[-1.0, 0], [0, 0], [1, 0], [9, 0], [10, 0], [11, 0]])
    labels = ["a"] * 3 + ["b"] * 3
    # centres (0, 0), (10, 0): RMS distance to their mean (5, 0) = 5; median size 1
    assert cluster_score(points, labels) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="2-D"):
        cluster_score(np.zeros((6, 3)), labels)
