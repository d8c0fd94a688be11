"""Metrics against the simulator's ground truth (locscope's own): exact compartment masks for every simulated cell."""

from __future__ import annotations

from typing import Any, Literal, Mapping

import numpy as np

from locscope.metrics.arrays import as_image_batch, check_same_shape, unbatch
from locscope.metrics.threshold import mask_iou, threshold_mask


def otsu_mask(images: Any) -> np.ndarray:
    """``image > threshold_otsu(image)`` per image (scikit-image); a constant image gives an empty mask."""
    from skimage.filters import threshold_otsu

    batch, single = as_image_batch(images, "images")
    masks = np.zeros(batch.shape, dtype=bool)
    for i, image in enumerate(batch):
        if image.max() > image.min():
            masks[i] = image > threshold_otsu(image)
    return masks[0] if single else masks


def iou_vs_truth(generated: Any, true_mask: Any, method: Literal["quantile", "lower_median", "otsu"] = "quantile"
                 ) -> np.ndarray | float:
    """IoU of the thresholded generated protein image against the true protein mask.

    A median threshold always keeps half of the pixels, so against a compartment covering a fraction ``f < 1/2`` of
    the image its IoU is at most ``2 f``; ``method='otsu'`` thresholds at Otsu's level instead and can reach 1.

    Parameters
    ----------
    generated : array_like, shape (H, W) or (B, H, W)
        Generated protein images.
    true_mask : array_like of bool, same shape
        Pixels where the simulator placed the protein (union of its compartments).
    method : {'quantile', 'lower_median', 'otsu'}
        Threshold for the generated image (default: CELL-Diff's generated-image convention).
    """
    if method == "otsu":
        return mask_iou(otsu_mask(generated), true_mask)
    return mask_iou(threshold_mask(generated, method), true_mask)


def true_protein_mask(compartment_masks: Mapping[str, Any], compartments: Any) -> np.ndarray:
    """Union of the masks of ``compartments`` (level-1 names) from a simulated cell's ``masks`` dict.

    Raises
    ------
    ValueError
        If a compartment has no mask.
    """
    names = list(compartments)
    missing = [n for n in names if n not in compartment_masks]
    if missing:
        raise ValueError(f"no mask for compartments {missing}; available: {sorted(compartment_masks)}")
    if not names:
        raise ValueError("compartments is empty")
    return np.logical_or.reduce([np.asarray(compartment_masks[n], dtype=bool) for n in names])


def localization_fidelity(generated: Any, true_mask: Any) -> np.ndarray | float:
    """Fraction of the generated protein intensity inside the true compartments: ``sum(I * M) / sum(I)``.

    Parameters
    ----------
    generated : array_like, shape (H, W) or (B, H, W)
        Non-negative generated intensities (negative values are clipped to 0).
    true_mask : array_like of bool, same shape

    Returns
    -------
    float or ndarray, shape (B,)
        In [0, 1]; NaN for an all-zero image. 1 when all intensity is where the protein truly is.
    """
    img, single = as_image_batch(generated, "generated")
    mask, _ = as_image_batch(true_mask, "true_mask", dtype=bool)
    check_same_shape(img, mask, ("generated", "true_mask"))
    img = np.clip(img, 0, None)
    total = img.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return unbatch(np.where(total > 0, (img * mask).sum(axis=(1, 2)) / np.where(total > 0, total, 1), np.nan), single)
