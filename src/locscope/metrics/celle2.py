"""CELL-E 2's image metrics (definitions inferred from the paper; they are not in its released code).

- nucleus proportion ``p = sum(B * M) / sum(B)``: the share of the binary protein image ``B`` inside the nucleus mask
  ``M``; Nucleus % MAE = ``mean |p_generated - p_real|``;
- pixel MAE = ``mean |B_generated - B_real|`` with ``B_real`` the median-thresholded real image;
- PDF MAE = ``mean |H - minmax(real)|`` with ``H`` the predicted per-pixel probability map in [0, 1].
CELL-E 2 on OpenCell validation: Nucleus % MAE 0.0170, pixel MAE 0.3449, PDF MAE 0.3487.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from locscope.metrics.arrays import as_image_batch, check_same_shape, unbatch
from locscope.metrics.threshold import ThresholdMethod, threshold_mask


def nucleus_proportion(protein_mask: Any, nucleus_mask: Any) -> np.ndarray | float:
    """Fraction of the binary protein image inside the nucleus: ``sum(B * M) / sum(B)`` per image.

    Parameters
    ----------
    protein_mask, nucleus_mask : array_like of bool, shape (H, W) or (B, H, W)

    Returns
    -------
    float or ndarray, shape (B,)
        In [0, 1]; NaN for an empty protein mask (no protein pixels: the share is undefined; callers that rank by it
        decide what an empty image scores).
    """
    b, single = as_image_batch(protein_mask, "protein_mask", dtype=bool)
    m, _ = as_image_batch(nucleus_mask, "nucleus_mask", dtype=bool)
    check_same_shape(b, m, ("protein_mask", "nucleus_mask"))
    inside = (b & m).sum(axis=(1, 2)).astype(np.float64)
    total = b.sum(axis=(1, 2)).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return unbatch(np.where(total > 0, inside / np.maximum(total, 1), np.nan), single)


def nucleus_mask(nucleus_image: Any) -> np.ndarray:
    """The nucleus mask ``M`` of a nucleus image: pixels above its Otsu threshold (none for a constant image).

    Parameters
    ----------
    nucleus_image : array_like, shape (H, W)
        The nucleus landmark, any intensity range.

    Returns
    -------
    ndarray of bool, shape (H, W)
    """
    from skimage.filters import threshold_otsu

    image = np.asarray(nucleus_image)
    if image.ndim != 2:
        raise ValueError(f"nucleus_image: expected shape (H, W), got {image.shape}")
    if not image.max() > image.min():
        return np.zeros(image.shape, bool)
    return image > threshold_otsu(image)


def nucleus_proportion_error(
    real: Any, generated: Any, nucleus_mask: Any, *, generated_is_binary: bool = False
) -> np.ndarray | float:
    """``|p_generated - p_real|`` per image (its mean is CELL-E 2's Nucleus % MAE).

    The real image is binarised at its lower median; the generated image at its interpolated median unless
    ``generated_is_binary`` (CELL-E 2 outputs a binary image directly).
    """
    real_b = threshold_mask(real, "lower_median")
    gen_b = _binary(generated, generated_is_binary, "quantile")
    return np.abs(nucleus_proportion(gen_b, nucleus_mask) - nucleus_proportion(real_b, nucleus_mask))


def binary_pixel_mae(real: Any, generated: Any, *, generated_is_binary: bool = False) -> np.ndarray | float:
    """``mean |B_generated - B_real|`` per image, ``B_real = real > lower median`` (CELL-E 2's pixel MAE)."""
    real_b, single = as_image_batch(threshold_mask(real, "lower_median"), "real", dtype=np.float64)
    gen_b, _ = as_image_batch(_binary(generated, generated_is_binary, "quantile"), "generated", dtype=np.float64)
    check_same_shape(real_b, gen_b)
    return unbatch(np.abs(gen_b - real_b).mean(axis=(1, 2)), single)


def pdf_mae(real: Any, probability_map: Any) -> np.ndarray | float:
    """``mean |H - minmax(real)|`` per image, ``H`` a per-pixel probability map in [0, 1] (CELL-E 2's PDF MAE).

    A constant real image normalises to zeros.
    """
    r, single = as_image_batch(real, "real")
    h, _ = as_image_batch(probability_map, "probability_map")
    check_same_shape(r, h, ("real", "probability_map"))
    low = r.min(axis=(1, 2), keepdims=True)
    span = r.max(axis=(1, 2), keepdims=True) - low
    norm = np.where(span > 0, (r - low) / np.where(span > 0, span, 1), 0.0)
    return unbatch(np.abs(h - norm).mean(axis=(1, 2)), single)


def _binary(images: Any, is_binary: bool, method: ThresholdMethod) -> np.ndarray:
    if is_binary:
        batch, single = as_image_batch(images, "generated")
        mask = batch > 0.5 * batch.max(axis=(1, 2), keepdims=True).clip(min=1e-12)
        return mask[0] if single else mask
    return threshold_mask(images, method)
