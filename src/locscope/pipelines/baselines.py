"""Sequence -> localization baselines that any learned predictor must beat.

* :class:`MajorityBaseline`: every protein gets the training set's class frequencies as scores (its macro-AP equals
  the class prevalences; its F1 comes from always predicting the classes seen in at least half of the training
  proteins, or the single most frequent one).
* :class:`KmerBaseline`: one-vs-rest logistic regression on hashed k-mer (1-3) counts of the whole sequence.
* :class:`CompositionBaseline`: one-vs-rest logistic regression on amino-acid composition features only: the whole
  sequence's composition, the compositions of the N- and C-terminal 30 residues (where most sorting signals sit) and
  log length (67 features, standardised).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
TERMINUS = 30


def composition_features(sequences: Sequence[str], terminus: int = TERMINUS) -> np.ndarray:
    """``(N, 61)`` features: composition of the sequence, of its first and last ``terminus`` residues (20 each),
    and ``log(length)``."""
    index = {aa: i for i, aa in enumerate(AMINO_ACIDS)}

    def composition(part: str) -> np.ndarray:
        counts = np.zeros(len(AMINO_ACIDS))
        for aa in part:
            if aa in index:
                counts[index[aa]] += 1
        return counts / max(1, counts.sum())

    rows = []
    for seq in sequences:
        seq = seq.upper()
        rows.append(np.concatenate([composition(seq), composition(seq[:terminus]), composition(seq[-terminus:]),
                                    [np.log(max(1, len(seq)))]]))
    return np.asarray(rows)


@dataclass
class MajorityBaseline:
    """Class frequencies of the training labels as every protein's scores."""

    frequencies: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def fit(self, labels: np.ndarray) -> "MajorityBaseline":
        """``labels`` ``(N, C)`` bool multi-hot."""
        self.frequencies = np.asarray(labels, dtype=float).mean(0)
        return self

    def predict_proba(self, sequences: Sequence[str]) -> np.ndarray:
        return np.tile(self.frequencies, (len(sequences), 1))

    def predict(self, sequences: Sequence[str]) -> np.ndarray:
        """Multi-hot predictions: classes with frequency >= 0.5, else the most frequent class."""
        chosen = self.frequencies >= 0.5
        if not chosen.any():
            chosen[np.argmax(self.frequencies)] = True
        return np.tile(chosen, (len(sequences), 1))


class _OneVsRest:
    """One classifier per class on ``self.features(sequences)`` (a subclass defines ``features`` and ``classifier``);
    a class with one outcome only predicts its frequency."""

    def __init__(self, C: float = 1.0, seed: int = 0) -> None:
        self.C, self.seed = C, seed
        self.models: list = []
        self.constant: list[float | None] = []

    def fit(self, sequences: Sequence[str], labels: np.ndarray) -> "_OneVsRest":
        features = self.features(sequences)
        labels = np.asarray(labels, dtype=bool)
        self.models, self.constant = [], []
        for j in range(labels.shape[1]):
            y = labels[:, j]
            if y.all() or not y.any():  # a class with one outcome only: predict its frequency
                self.models.append(None)
                self.constant.append(float(y.mean()))
                continue
            self.models.append(self.classifier().fit(features, y))
            self.constant.append(None)
        return self

    def predict_proba(self, sequences: Sequence[str]) -> np.ndarray:
        """``(N, C)`` independent per-class probabilities."""
        features = self.features(sequences)
        columns = [np.full(features.shape[0], c) if m is None else m.predict_proba(features)[:, 1]
                   for m, c in zip(self.models, self.constant)]
        return np.stack(columns, axis=1)


class CompositionBaseline(_OneVsRest):
    """One-vs-rest logistic regression on :func:`composition_features` (scikit-learn), L2 with ``C``."""

    def features(self, sequences: Sequence[str]) -> np.ndarray:
        return composition_features(sequences)

    def classifier(self):
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), LogisticRegression(C=self.C, max_iter=2000, random_state=self.seed))


class KmerBaseline(_OneVsRest):
    """One-vs-rest logistic regression on hashed k-mer counts of the whole sequence (scikit-learn).

    Every k-mer of length ``k_min..k_max`` is counted into ``n_features`` hashed buckets (``HashingVectorizer``,
    no sign flipping); each row is L2-normalised. Liblinear with L2 penalty ``C``.
    """

    def __init__(self, C: float = 1.0, seed: int = 0, k_min: int = 1, k_max: int = 3, n_features: int = 2 ** 18) -> None:
        super().__init__(C, seed)
        self.k_min, self.k_max, self.n_features = k_min, k_max, n_features

    def features(self, sequences: Sequence[str]):
        from sklearn.feature_extraction.text import HashingVectorizer

        vectorizer = HashingVectorizer(analyzer="char", ngram_range=(self.k_min, self.k_max), lowercase=False,
                                       n_features=self.n_features, alternate_sign=False, norm="l2")
        return vectorizer.transform(list(sequences))

    def classifier(self):
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=self.C, solver="liblinear", max_iter=1000, random_state=self.seed)
