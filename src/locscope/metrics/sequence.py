"""Sequence -> localization scores (seq2loc benchmark conventions): multi-label AP, F1 and exact-match accuracy.

Use them at level 3 (nucleus, cytosol, endomembrane-system, plasma-membrane, mitochondria, nucleoli, cytoskeleton)
and level 2 of the localization ontology. Published level-3 macro-AP on the HOU test set: LAProtT5 0.682,
DeepLoc2-ProtT5 0.669; a random predictor's macro-F1 is 0.186. :func:`hierarchical_scores` maps level-1 predictions
to both levels.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from locscope.metrics.arrays import to_numpy


def multilabel_targets(label_lists: Sequence[Sequence[str]], classes: Sequence[str]) -> np.ndarray:
    """Binary indicator matrix ``(N, C)`` from per-item label lists.

    Raises
    ------
    ValueError
        For a label that is not in ``classes`` (naming the item and the label).
    """
    index = {c: j for j, c in enumerate(classes)}
    out = np.zeros((len(label_lists), len(classes)), dtype=bool)
    for i, labels in enumerate(label_lists):
        for label in labels:
            if label not in index:
                raise ValueError(f"item {i}: label {label!r} is not one of the classes {list(classes)}")
            out[i, index[label]] = True
    return out


def average_precision(y_true: Any, y_score: Any) -> float:
    """Average precision of one binary problem: ``sum_n (R_n - R_{n-1}) P_n`` over distinct score thresholds.

    The step-wise (non-interpolated) definition of scikit-learn's ``average_precision_score``. NaN when there are no
    positives.
    """
    truth = to_numpy(y_true, bool).ravel()
    score = to_numpy(y_score).ravel()
    if truth.shape != score.shape:
        raise ValueError(f"y_true and y_score differ in size: {truth.size} vs {score.size}")
    n_pos = truth.sum()
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-score, kind="stable")
    score, truth = score[order], truth[order]
    last_of_threshold = np.r_[np.flatnonzero(np.diff(score)), score.size - 1]  # ties share one threshold
    tp = np.cumsum(truth)[last_of_threshold]
    predicted = last_of_threshold + 1
    precision = tp / predicted
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _check(y_true: Any, y_score: Any) -> tuple[np.ndarray, np.ndarray]:
    truth, score = to_numpy(y_true, bool), to_numpy(y_score)
    if truth.ndim != 2 or truth.shape != score.shape:
        raise ValueError(f"y_true and y_score must both have shape (N, C), got {truth.shape} and {score.shape}")
    return truth, score


def multilabel_scores(y_true: Any, y_score: Any, threshold: float = 0.5) -> dict[str, float]:
    """Macro/micro average precision, macro/micro F1 and exact-match accuracy of multi-label predictions.

    Parameters
    ----------
    y_true : array_like of bool, shape (N, C)
        True labels (see :func:`multilabel_targets`).
    y_score : array_like, shape (N, C)
        Predicted scores (probabilities); a class is predicted when its score is ``>= threshold``.
    threshold : float, default 0.5

    Returns
    -------
    dict
        ``macro_ap`` (mean over classes with at least one positive; ``n_classes_without_positives`` says how many
        were skipped), ``micro_ap`` (AP of the flattened matrix), ``macro_f1`` (mean per-class F1, 0 for a class never
        true nor predicted), ``micro_f1``, ``exact_match`` (fraction of items whose predicted label set is exactly the
        true set).
    """
    truth, score = _check(y_true, y_score)
    pred = score >= threshold
    per_class_ap = [average_precision(truth[:, j], score[:, j]) for j in range(truth.shape[1])]
    valid = [ap for ap in per_class_ap if not np.isnan(ap)]
    tp = (pred & truth).sum(axis=0).astype(float)
    fp = (pred & ~truth).sum(axis=0).astype(float)
    fn = (~pred & truth).sum(axis=0).astype(float)
    denom = 2 * tp + fp + fn
    f1 = np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), 0.0)
    micro_denom = 2 * tp.sum() + fp.sum() + fn.sum()
    return {
        "macro_ap": float(np.mean(valid)) if valid else float("nan"),
        "micro_ap": average_precision(truth, score),
        "macro_f1": float(f1.mean()),
        "micro_f1": float(2 * tp.sum() / micro_denom) if micro_denom > 0 else 0.0,
        "exact_match": float(np.mean(np.all(pred == truth, axis=1))),
        "n_classes_without_positives": int(len(per_class_ap) - len(valid)),
    }


def coarsen_scores(level1_scores: Any, level: str, classes: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Scores over level-1 classes -> scores over level-2 or level-3 classes (max over each coarse class's members).

    Parameters
    ----------
    level1_scores : array_like, shape (N, len(classes))
    level : {'level2', 'level3'}
    classes : sequence of str, optional
        Level-1 class of each column (default ``locscope.data.ontology.LEVEL1``).

    Returns
    -------
    scores : ndarray, shape (N, C_level)
    coarse_classes : list of str
        Column names, in the ontology's order (``LEVEL2`` / ``LEVEL3``).
    """
    from locscope.data import ontology

    if level == "level2":
        mapping, order = ontology.to_level2, ontology.LEVEL2
    elif level == "level3":
        mapping, order = ontology.to_level3, ontology.LEVEL3
    else:
        raise ValueError(f"level={level!r}: accepted values are 'level2', 'level3'")
    classes = list(ontology.LEVEL1 if classes is None else classes)
    scores = to_numpy(level1_scores)
    if scores.ndim != 2 or scores.shape[1] != len(classes):
        raise ValueError(f"level1_scores must have shape (N, {len(classes)}), got {scores.shape}")
    coarse = np.full((scores.shape[0], len(order)), -np.inf)
    for j, name in enumerate(classes):
        k = order.index(mapping(name))
        coarse[:, k] = np.maximum(coarse[:, k], scores[:, j])
    return np.where(np.isfinite(coarse), coarse, 0.0), list(order)


def hierarchical_scores(
    true_level1: Sequence[Sequence[str]],
    level1_scores: Any,
    *,
    classes: Sequence[str] | None = None,
    levels: Sequence[str] = ("level3", "level2"),
    exclude: Sequence[str] = ("plastid",),
    threshold: float = 0.5,
) -> dict[str, dict[str, float]]:
    """seq2loc's evaluation of level-1 predictions at the coarser levels: :func:`multilabel_scores` per level.

    True level-1 label lists and predicted level-1 scores are both mapped up the ontology (a coarse class is true when
    any of its members is; its score is the maximum of its members' scores). ``exclude`` drops classes absent from the
    benchmark (plastid: seq2loc's level 3 has 7 human classes).

    Returns
    -------
    dict
        ``{'level3': {...}, 'level2': {...}}`` with the keys of :func:`multilabel_scores` plus ``classes``.
    """
    from locscope.data import ontology

    out: dict[str, dict[str, float]] = {}
    for level in levels:
        scores, coarse = coarsen_scores(level1_scores, level, classes)
        mapping = ontology.to_level2 if level == "level2" else ontology.to_level3
        truth = multilabel_targets([[mapping(c) for c in labels] for labels in true_level1], coarse)
        keep = [j for j, c in enumerate(coarse) if c not in exclude]
        out[level] = {**multilabel_scores(truth[:, keep], scores[:, keep], threshold),
                      "classes": [coarse[j] for j in keep]}
    return out
