"""Virtual-staining metrics (the guided I2I paper, Tables 1-2): image-level and feature-level agreement of predicted
Cell Painting images with the real ones.

Image level (per image and channel, from :mod:`locscope.metrics.pixel`): PCC, SSIM, MSE, MAE.
Feature level, on per-image profiles (handcrafted CellProfiler-like features per channel from
:func:`cellprofiler_features`, or any encoder's embeddings):

- **NN matches / NN top-5**: within one set of profiles, the share of items whose nearest (or one of the 5 nearest)
  other items by cosine similarity carries the same class (perturbation / target) — does the prediction keep the
  class structure the real images have;
- **MTdist**: mean cosine distance between the profiles of all pairs of items sharing a class (lower = tighter);
- **CPcor**: mean over features of the Pearson correlation, across items, between predicted and real feature values.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from locscope.metrics.pixel import pixel_metrics

GRANULARITY_RADII: tuple[int, ...] = (1, 2, 3, 4)
TEXTURE_LEVELS = 16


def _batch(images: Any, name: str) -> np.ndarray:
    array = np.asarray(images, dtype=np.float64)
    if array.ndim != 4:
        raise ValueError(f"{name}: expected (N, C, H, W) images, got shape {array.shape}")
    return array


def channel_features(plane: np.ndarray) -> np.ndarray:
    """CellProfiler-like features of one ``(H, W)`` plane (any scale): intensity (mean, std, 10/50/90th percentiles,
    mass displacement), Haralick texture (contrast, homogeneity, energy, correlation at distance 1, four angles, on
    16 grey levels between the 1st and 99th percentile) and granularity (share of signal removed by grey openings
    with disks of radius 1-4)."""
    from skimage.feature import graycomatrix, graycoprops
    from skimage.morphology import disk, opening

    x = plane.astype(np.float64)
    rows, cols = np.indices(x.shape)
    positive = x - x.min()
    total = positive.sum()
    if total > 0:  # distance of the intensity centroid from the image centre, in pixels
        centroid = np.array([(rows * positive).sum(), (cols * positive).sum()]) / total
        displacement = float(np.hypot(*(centroid - (np.array(x.shape) - 1) / 2)))
    else:
        displacement = 0.0
    intensity = [x.mean(), x.std(), *np.percentile(x, [10, 50, 90]), displacement]
    low, high = np.percentile(x, [1, 99])
    levels = np.clip((x - low) / max(high - low, 1e-12) * (TEXTURE_LEVELS - 1), 0, TEXTURE_LEVELS - 1)
    matrix = graycomatrix(levels.round().astype(np.uint8), [1], [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4],
                          levels=TEXTURE_LEVELS, symmetric=True, normed=True)
    texture = [float(np.nan_to_num(graycoprops(matrix, prop)).mean())
               for prop in ("contrast", "homogeneity", "energy", "correlation")]
    scaled = np.clip((x - low) / max(high - low, 1e-12), 0, 1)
    mass, granularity, previous = max(scaled.sum(), 1e-12), [], scaled
    for radius in GRANULARITY_RADII:
        opened = opening(scaled, disk(radius))
        granularity.append(float((previous.sum() - opened.sum()) / mass))
        previous = opened
    return np.array(intensity + texture + granularity, dtype=np.float64)


def cellprofiler_features(images: Any) -> np.ndarray:
    """Handcrafted profiles ``(N, C * 14)`` of ``(N, C, H, W)`` images (:func:`channel_features` per channel)."""
    batch = _batch(images, "images")
    return np.stack([np.concatenate([channel_features(plane) for plane in image]) for image in batch])


def _cosine(features: np.ndarray) -> np.ndarray:
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    return unit @ unit.T


def standardize_features(*feature_sets: np.ndarray) -> list[np.ndarray]:
    """z-score every feature with the mean and std of the first set (profiles are compared on a common scale)."""
    reference = np.asarray(feature_sets[0], dtype=np.float64)
    mean, std = reference.mean(0), reference.std(0)
    std = np.where(std > 0, std, 1.0)
    return [(np.asarray(f, dtype=np.float64) - mean) / std for f in feature_sets]


def nn_class_match(features: Any, labels: Sequence[Any], k: int = 1) -> float:
    """Share of items whose ``k`` nearest other items (cosine) include one of the same class (NN match: ``k=1``,
    NN top-5: ``k=5``)."""
    feats = np.asarray(features, dtype=np.float64)
    labels = np.asarray(list(labels), dtype=object)
    if feats.ndim != 2 or len(feats) != len(labels):
        raise ValueError(f"features {feats.shape} and {len(labels)} labels do not match")
    if not 1 <= k < len(feats):
        raise ValueError(f"k={k} must be between 1 and the number of items - 1 ({len(feats) - 1})")
    sims = _cosine(feats)
    np.fill_diagonal(sims, -np.inf)
    neighbours = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return float(np.mean([labels[i] in set(labels[neighbours[i]]) for i in range(len(feats))]))


def matching_class_distance(features: Any, labels: Sequence[Any]) -> float:
    """MTdist: mean cosine distance over all pairs of items that share a class (NaN without such pairs)."""
    feats = np.asarray(features, dtype=np.float64)
    labels = np.asarray(list(labels), dtype=object)
    distance = 1.0 - _cosine(feats)
    same = labels[:, None] == labels[None, :]
    upper = np.triu(np.ones_like(same, dtype=bool), 1)
    pairs = distance[same & upper]
    return float(pairs.mean()) if len(pairs) else float("nan")


def feature_correlation(real_features: Any, predicted_features: Any) -> float:
    """CPcor: mean over features of the Pearson correlation across items of predicted vs real values (features
    constant in either set are skipped)."""
    real = np.asarray(real_features, dtype=np.float64)
    pred = np.asarray(predicted_features, dtype=np.float64)
    if real.shape != pred.shape:
        raise ValueError(f"real features {real.shape} and predicted features {pred.shape} differ in shape")
    a, b = real - real.mean(0), pred - pred.mean(0)
    denominator = np.sqrt((a ** 2).sum(0) * (b ** 2).sum(0))
    valid = denominator > 1e-12
    if not valid.any():
        return float("nan")
    return float(((a * b).sum(0)[valid] / denominator[valid]).mean())


def staining_metrics(real: Any, predicted: Any, labels: Sequence[Any], channels: Sequence[str],
                     data_range: float = 30.0) -> dict[str, Any]:
    """Every Table-2 metric for z-scored ``(N, C, H, W)`` real and predicted images with class ``labels``.

    Returns means over images (``pcc``, ``ssim``, ``mse``, ``mae``, and ``per_channel`` of each), the feature metrics
    of the predictions (``nn_match``, ``nn_top5``, ``mt_dist``), the same for the real images (``real_nn_match``,
    ``real_nn_top5``, ``real_mt_dist``: the ceiling) and ``cp_cor``. SSIM uses ``data_range`` (30 = the +-15 clip).
    """
    real_b, pred_b = _batch(real, "real"), _batch(predicted, "predicted")
    if real_b.shape != pred_b.shape:
        raise ValueError(f"real {real_b.shape} and predicted {pred_b.shape} differ in shape")
    pixel = pixel_metrics(real_b, pred_b, data_range)
    out: dict[str, Any] = {name: float(np.mean(values)) for name, values in pixel.items() if name != "psnr"}
    out["per_channel"] = {name: {c: float(np.mean(np.asarray(values)[:, i])) for i, c in enumerate(channels)}
                          for name, values in pixel.items() if name != "psnr"}
    real_f, pred_f = standardize_features(cellprofiler_features(real_b), cellprofiler_features(pred_b))
    k5 = min(5, len(labels) - 1)
    out.update(nn_match=nn_class_match(pred_f, labels, 1), nn_top5=nn_class_match(pred_f, labels, k5),
               mt_dist=matching_class_distance(pred_f, labels), real_nn_match=nn_class_match(real_f, labels, 1),
               real_nn_top5=nn_class_match(real_f, labels, k5), real_mt_dist=matching_class_distance(real_f, labels),
               cp_cor=feature_correlation(real_f, pred_f))
    return out
