"""Feature-space metrics on embeddings of real and generated images (guided-I2I, proteoscope, cytoself).

Features come from any image encoder (see :mod:`locscope.metrics.feature_networks`); labels are any hashable
(protein id, target, compartment class).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from locscope.metrics.arrays import to_numpy


def _features(x: Any, name: str) -> np.ndarray:
    arr = to_numpy(x)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected features of shape (N, D), got {arr.shape}")
    return arr


def _labels(labels: Sequence[Any], n: int, name: str) -> np.ndarray:
    arr = np.asarray(list(labels), dtype=object)
    if arr.shape != (n,):
        raise ValueError(f"{name}: expected {n} labels, got {arr.shape[0] if arr.ndim else 0}")
    return arr


def cosine_similarity(a: Any, b: Any) -> np.ndarray:
    """Cosine similarity matrix ``(N, M)`` between rows of ``a (N, D)`` and ``b (M, D)`` (0 for zero vectors)."""
    a, b = _features(a, "a"), _features(b, "b")
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T


def nearest_real(generated: Any, real: Any, k: int) -> np.ndarray:
    """Indices ``(N_gen, k)`` of the ``k`` real items most cosine-similar to each generated item, nearest first.

    Ties are broken by the lower real index (stable sort).
    """
    sims = cosine_similarity(generated, real)
    if not 1 <= k <= sims.shape[1]:
        raise ValueError(f"k={k} must be between 1 and the number of real items ({sims.shape[1]})")
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


def nn_match(
    generated: Any, real: Any, generated_labels: Sequence[Any], real_labels: Sequence[Any], k: int = 1
) -> np.ndarray:
    """Per generated item: does one of its ``k`` nearest real items (cosine) carry the same label?

    ``k=1`` is guided-I2I's NN match, ``k=5`` its top-5 match; the metric is the mean of the returned booleans.

    Returns
    -------
    ndarray of bool, shape (N_gen,)
    """
    gen, rea = _features(generated, "generated"), _features(real, "real")
    gl = _labels(generated_labels, len(gen), "generated_labels")
    rl = _labels(real_labels, len(rea), "real_labels")
    neighbours = nearest_real(gen, rea, k)
    return np.array([gl[i] in set(rl[neighbours[i]]) for i in range(len(gen))], dtype=bool)


def knn_predict(generated: Any, real: Any, real_labels: Sequence[Any], k: int = 5) -> list[Any]:
    """Majority label of the ``k`` nearest real items (cosine) for each generated item.

    Ties between equally frequent labels go to the label of the nearest neighbour among them.
    """
    gen, rea = _features(generated, "generated"), _features(real, "real")
    rl = _labels(real_labels, len(rea), "real_labels")
    predictions = []
    for row in nearest_real(gen, rea, k):
        votes = Counter(rl[row])
        best = max(votes.values())
        predictions.append(next(label for label in rl[row] if votes[label] == best))
    return predictions


def knn_accuracy(
    generated: Any, real: Any, generated_labels: Sequence[Any], real_labels: Sequence[Any], k: int = 5
) -> float:
    """Fraction of generated items whose k-NN (majority vote over real items) label equals their own label."""
    gl = _labels(generated_labels, len(_features(generated, "generated")), "generated_labels")
    predicted = knn_predict(generated, real, real_labels, k)
    return float(np.mean([p == t for p, t in zip(predicted, gl)]))


@dataclass(frozen=True)
class ClassificationAgreement:
    """A classifier trained on real features, scored on generated features.

    Attributes
    ----------
    accuracy : float
        Fraction of generated items classified as their true compartment.
    confusion : ndarray of int, shape (C, C)
        Rows: true class, columns: predicted class, in the order of ``classes``.
    classes : list
        Class labels.
    predictions : list
        Predicted label per generated item.
    """

    accuracy: float
    confusion: np.ndarray
    classes: list
    predictions: list


def classification_agreement(
    real: Any,
    real_labels: Sequence[Any],
    generated: Any,
    generated_labels: Sequence[Any],
    *,
    seed: int = 0,
) -> ClassificationAgreement:
    """proteoscope's compartment-classification agreement: logistic regression on standardised real features.

    Parameters
    ----------
    real : array_like, shape (N_real, D)
    real_labels : sequence of N_real labels (at least 2 classes)
    generated : array_like, shape (N_gen, D)
    generated_labels : sequence of N_gen true labels
    seed : int
        Seed of the solver.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import confusion_matrix
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rea, gen = _features(real, "real"), _features(generated, "generated")
    rl = [str(x) for x in _labels(real_labels, len(rea), "real_labels")]
    gl = [str(x) for x in _labels(generated_labels, len(gen), "generated_labels")]
    if len(set(rl)) < 2:
        raise ValueError(f"classification agreement needs at least 2 classes among the real labels, got {set(rl)}")
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    model.fit(rea, rl)
    predicted = list(model.predict(gen))
    classes = sorted(set(rl) | set(gl))
    confusion = confusion_matrix(gl, predicted, labels=classes)
    accuracy = float(np.mean([p == t for p, t in zip(predicted, gl)]))
    return ClassificationAgreement(accuracy, confusion, classes, predicted)


def cross_validated_accuracy(features: Any, labels: Sequence[Any], *, folds: int = 5, seed: int = 0) -> float | None:
    """Accuracy of :func:`classification_agreement`'s classifier on the real items themselves, each predicted by a
    classifier fitted on the other folds (stratified ``folds``-fold cross-validation): the "real images" column of
    proteoscope's headline metric. None when a class has fewer than 2 items or there is one class.

    Parameters
    ----------
    features : array_like, shape (N, D)
    labels : sequence of N labels
    folds : int
        At most this many folds (fewer when the smallest class is smaller).
    seed : int
        Seed of the fold assignment and of the solver.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = _features(features, "features")
    y = [str(v) for v in _labels(labels, len(x), "labels")]
    counts = [y.count(c) for c in set(y)]
    if len(counts) < 2 or min(counts) < 2:
        return None
    splitter = StratifiedKFold(n_splits=min(folds, min(counts)), shuffle=True, random_state=seed)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    predicted = cross_val_predict(model, x, y, cv=splitter)
    return float(np.mean([p == t for p, t in zip(predicted, y)]))


def cluster_score(embedding: Any, labels: Sequence[Any]) -> float:
    """cytoself's cluster score of a 2-D embedding: spread of class medians / median within-class spread.

    Each class has a centre (coordinate-wise median of its points) and a size (median Euclidean distance of its points
    to that centre), as cytoself's ``calculate_cluster_centrosize``. The score is the root-mean-square distance of the
    class centres to their mean, divided by the median class size: higher = classes better separated.

    Parameters
    ----------
    embedding : array_like, shape (N, 2)
        E.g. a UMAP of image features.
    labels : sequence of N labels (at least 2 classes)
    """
    points = _features(embedding, "embedding")
    if points.shape[1] != 2:
        raise ValueError(f"embedding: expected a 2-D embedding (N, 2), got {points.shape}")
    lab = _labels(labels, len(points), "labels")
    classes = sorted(set(lab.tolist()), key=str)
    if len(classes) < 2:
        raise ValueError("cluster_score needs at least 2 classes")
    centres, sizes = [], []
    for c in classes:
        members = points[lab == c]
        centre = np.median(members, axis=0)
        centres.append(centre)
        sizes.append(np.median(np.linalg.norm(members - centre, axis=1)))
    centres = np.asarray(centres)
    spread = np.sqrt(np.mean(np.sum((centres - centres.mean(axis=0)) ** 2, axis=1)))
    within = np.median(sizes)
    return float(spread / within) if within > 0 else float("inf")
