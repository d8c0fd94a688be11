"""Median thresholding and IoU, with CELL-Diff's published conventions.

CELL-Diff binarises the *real* image at ``torch.median`` (the lower of the two middle values of the flattened image) and
the *generated* image at ``torch.quantile(x, 0.5)`` (the linearly interpolated median), then scores
``IoU = |B_r & B_g| / |B_r | B_g|`` per image. The two conventions differ on images with an even number of pixels, so
they are reproduced exactly here with torch itself (see ``docs/metrics.md``).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

from locscope.metrics.arrays import as_image_batch, check_same_shape, to_numpy, unbatch

ThresholdMethod = Literal["lower_median", "quantile"]


def _as_float_tensor(images: np.ndarray) -> torch.Tensor:
    # Keep float32/float64 as they are (torch's quantile interpolates in the input dtype); integers become float64,
    # which represents every 8/16-bit value exactly.
    if images.dtype not in (np.float32, np.float64):
        images = images.astype(np.float64)
    return torch.from_numpy(np.ascontiguousarray(images))


def _thresholds(tensor: torch.Tensor, method: str) -> torch.Tensor:
    flat = tensor.reshape(tensor.shape[0], -1)  # (B, H*W)
    if method == "lower_median":
        return torch.median(flat, dim=1).values
    if method == "quantile":
        return torch.quantile(flat, 0.5, dim=1)
    raise ValueError(f"method={method!r}: accepted values are 'lower_median', 'quantile'")


def median_threshold(images: Any, method: ThresholdMethod = "lower_median") -> np.ndarray | float:
    """Per-image median used as a binarisation threshold.

    Parameters
    ----------
    images : array_like or torch.Tensor, shape (H, W) or (B, H, W)
        Intensity images (any real dtype).
    method : {'lower_median', 'quantile'}
        ``'lower_median'``: ``torch.median`` (sorted value at index ``(n - 1) // 2``), CELL-Diff's threshold for real
        images. ``'quantile'``: ``torch.quantile(x, 0.5)`` (mean of the two middle values when ``n`` is even), its
        threshold for generated images.

    Returns
    -------
    float or ndarray, shape (B,)
        The threshold of each image, in the images' units.

    Examples
    --------
    >>> median_threshold(np.array([[1.0, 2.0], [3.0, 4.0]]), "lower_median"), median_threshold(np.array([[1.0, 2.0], [3.0, 4.0]]), "quantile")
    (2.0, 2.5)
    """
    batch, single = as_image_batch(images, "images", dtype=None)
    values = _thresholds(_as_float_tensor(batch), method)
    return unbatch(values.numpy().astype(np.float64), single)


def threshold_mask(images: Any, method: ThresholdMethod = "lower_median") -> np.ndarray:
    """Binary mask ``image > median_threshold(image, method)``, per image.

    Parameters
    ----------
    images : array_like or torch.Tensor, shape (H, W) or (B, H, W)
    method : {'lower_median', 'quantile'}
        See :func:`median_threshold`.

    Returns
    -------
    ndarray of bool, same shape as ``images``
    """
    batch, single = as_image_batch(images, "images", dtype=None)
    tensor = _as_float_tensor(batch)
    mask = (tensor > _thresholds(tensor, method)[:, None, None]).numpy()
    return mask[0] if single else mask


def mask_iou(mask_a: Any, mask_b: Any) -> np.ndarray | float:
    """Intersection over union of binary masks, per image.

    Parameters
    ----------
    mask_a, mask_b : array_like of bool, shape (H, W) or (B, H, W)

    Returns
    -------
    float or ndarray, shape (B,)
        ``|a & b| / |a | b|``; 1.0 when both masks are empty (two empty masks agree everywhere).
    """
    a, single = as_image_batch(mask_a, "mask_a", dtype=bool)
    b, _ = as_image_batch(mask_b, "mask_b", dtype=bool)
    check_same_shape(a, b, ("mask_a", "mask_b"))
    inter = np.logical_and(a, b).sum(axis=(1, 2)).astype(np.float64)
    union = np.logical_or(a, b).sum(axis=(1, 2)).astype(np.float64)
    values = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return unbatch(values, single)


def iou(real: Any, generated: Any) -> np.ndarray | float:
    """CELL-Diff's median-threshold IoU between real and generated protein images.

    ``B_r = real > torch.median(real)``, ``B_g = generated > torch.quantile(generated, 0.5)``, IoU per image. CELL-Diff
    reports the mean over its test set (0.6228 on HPA).

    Parameters
    ----------
    real, generated : array_like or torch.Tensor, shape (H, W) or (B, H, W)
        Protein images in any common intensity scale (thresholds are per image, so the scale does not matter).

    Returns
    -------
    float or ndarray, shape (B,)

    Examples
    --------
    >>> image = np.arange(16, dtype=float).reshape(4, 4)
    >>> iou(image, image)
    1.0
    """
    real_b, single = as_image_batch(to_numpy(real, None), "real", dtype=None)
    gen_b, _ = as_image_batch(to_numpy(generated, None), "generated", dtype=None)
    check_same_shape(real_b, gen_b)
    values = mask_iou(threshold_mask(real_b, "lower_median"), threshold_mask(gen_b, "quantile"))
    return unbatch(np.asarray(values), single)
