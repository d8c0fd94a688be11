"""Fréchet distance between feature distributions: FID-O and FID-T as CELL-Diff computes them.

``FD = ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2))`` between Gaussian fits of real and generated features.
CELL-Diff turns every sample into an 8-bit RGB image with R = 0, G = protein, B = nucleus before extracting features:
FID-O uses the protein image itself; FID-T puts the binary median-threshold mask of the protein in G, stored as 0/128
(the published quirk, kept under the published name ``fid_t``); ``fid_t_255`` is the same with a 0/255 mask.

Features are accumulated in :class:`FeatureStats` (running sums in float64), so any number of images fits in memory.
FIDs computed with different feature networks are not comparable: every report names the network.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from locscope.metrics.arrays import as_image_batch, check_same_shape, to_numpy
from locscope.metrics.threshold import ThresholdMethod, threshold_mask

FIDMode = Literal["image", "mask128", "mask255"]


class FeatureStats:
    """Streaming mean and covariance of feature vectors (float64 running sums; memory O(D^2), not O(N D)).

    Examples
    --------
    >>> stats = FeatureStats()
    >>> stats.update(np.random.default_rng(0).normal(size=(100, 4)))
    >>> stats.mean.shape, stats.covariance.shape
    ((4,), (4, 4))
    """

    def __init__(self) -> None:
        self.count = 0
        self._sum: np.ndarray | None = None
        self._outer: np.ndarray | None = None

    def update(self, features: Any) -> None:
        """Add a batch of features, shape (B, D)."""
        feats = to_numpy(features)
        if feats.ndim != 2:
            raise ValueError(f"features must have shape (B, D), got {feats.shape}")
        if self._sum is None:
            self._sum = np.zeros(feats.shape[1])
            self._outer = np.zeros((feats.shape[1], feats.shape[1]))
        elif feats.shape[1] != self._sum.shape[0]:
            raise ValueError(f"feature dimension changed from {self._sum.shape[0]} to {feats.shape[1]}")
        self.count += feats.shape[0]
        self._sum += feats.sum(axis=0)
        self._outer += feats.T @ feats

    @property
    def mean(self) -> np.ndarray:
        """Mean feature vector, shape (D,)."""
        if self._sum is None or self.count == 0:
            raise ValueError("no features were added")
        return self._sum / self.count

    @property
    def covariance(self) -> np.ndarray:
        """Unbiased covariance (``ddof=1``, as ``np.cov`` in pytorch-fid), shape (D, D)."""
        if self.count < 2:
            raise ValueError(f"a covariance needs at least 2 feature vectors, got {self.count}")
        mean = self.mean
        return (self._outer - self.count * np.outer(mean, mean)) / (self.count - 1)


def _sqrtm_psd(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any) -> float:
    """Fréchet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2).

    ``Tr((S1 S2)^(1/2))`` is computed as the sum of square roots of the eigenvalues of the symmetric PSD matrix
    ``S1^(1/2) S2 S1^(1/2)`` (same spectrum as ``S1 S2``), which avoids the complex round-off of a general ``sqrtm``.

    Parameters
    ----------
    mu1, mu2 : array_like, shape (D,)
    sigma1, sigma2 : array_like, shape (D, D)
        Symmetric positive semi-definite covariances.

    Returns
    -------
    float
        Non-negative distance (0 for identical Gaussians, up to round-off).
    """
    mu1, mu2, sigma1, sigma2 = (to_numpy(x) for x in (mu1, mu2, sigma1, sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shapes do not match: mu {mu1.shape}/{mu2.shape}, sigma {sigma1.shape}/{sigma2.shape}")
    root1 = _sqrtm_psd(sigma1)
    middle = root1 @ sigma2 @ root1
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt
    return float(max(value, 0.0))


def frechet_distance_from_stats(real: FeatureStats, generated: FeatureStats) -> float:
    """Fréchet distance between two :class:`FeatureStats`."""
    return frechet_distance(real.mean, real.covariance, generated.mean, generated.covariance)


def to_uint8(images: Any, value_range: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """Map images from ``value_range`` to 0..255 (rounded, clipped), as 8-bit PNGs store them.

    CELL-Diff's samples live in [-1, 1]: pass ``value_range=(-1, 1)``.
    """
    low, high = value_range
    if not high > low:
        raise ValueError(f"value_range must be (low, high) with high > low, got {value_range}")
    scaled = (to_numpy(images) - low) / (high - low) * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def fid_rgb(
    protein: Any,
    nucleus: Any,
    mode: FIDMode = "image",
    *,
    value_range: tuple[float, float] = (0.0, 1.0),
    threshold_method: ThresholdMethod = "quantile",
) -> np.ndarray:
    """Build CELL-Diff's 3-channel FID images: R = 0, G = protein (or its mask), B = nucleus.

    Parameters
    ----------
    protein, nucleus : array_like, shape (H, W) or (B, H, W)
        Images in ``value_range``.
    mode : {'image', 'mask128', 'mask255'}
        G channel: the protein image (FID-O), its median-threshold mask stored as 0/128 (FID-T as published) or as
        0/255 (FID-T corrected).
    value_range : (float, float), default (0, 1)
        Range mapped to 0..255.
    threshold_method : {'quantile', 'lower_median'}, default 'quantile'
        Median convention for the mask (CELL-Diff: ``'lower_median'`` for real, ``'quantile'`` for generated images).

    Returns
    -------
    ndarray of uint8, shape (B, 3, H, W)
    """
    prot, _ = as_image_batch(protein, "protein")
    nuc, _ = as_image_batch(nucleus, "nucleus")
    check_same_shape(prot, nuc, ("protein", "nucleus"))
    if mode == "image":
        green = to_uint8(prot, value_range)
    elif mode == "mask128":
        green = threshold_mask(prot, threshold_method).astype(np.uint8) * np.uint8(128)
    elif mode == "mask255":
        green = threshold_mask(prot, threshold_method).astype(np.uint8) * np.uint8(255)
    else:
        raise ValueError(f"mode={mode!r}: accepted values are 'image', 'mask128', 'mask255'")
    red = np.zeros_like(green)
    return np.stack([red, green, to_uint8(nuc, value_range)], axis=1)
