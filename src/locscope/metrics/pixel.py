"""Pixel-wise image similarity (guided-I2I, proteoscope): SSIM, PSNR, PCC, MSE and MAE, per image and channel.

All functions take ``(H, W)``, ``(B, H, W)`` or ``(B, C, H, W)`` arrays (numpy or torch) and return one value per
image and channel (the leading dimensions), to be averaged (mean and std) over images. SSIM and PSNR need the
images' *declared* data range (e.g. 1.0 for [0, 1] floats, 255 for 8-bit): state it in every report.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from locscope.metrics.arrays import check_same_shape, to_numpy


def _pair(real: Any, generated: Any) -> tuple[np.ndarray, np.ndarray]:
    a, b = to_numpy(real), to_numpy(generated)
    check_same_shape(a, b)
    if a.ndim < 2:
        raise ValueError(f"images must be at least 2-D (H, W), got shape {a.shape}")
    return a, b


def _reduce(values: np.ndarray) -> np.ndarray | float:
    return float(values) if values.ndim == 0 else values


def mse(real: Any, generated: Any) -> np.ndarray | float:
    """Mean squared error over the last two axes (H, W)."""
    a, b = _pair(real, generated)
    return _reduce(((a - b) ** 2).mean(axis=(-2, -1)))


def mae(real: Any, generated: Any) -> np.ndarray | float:
    """Mean absolute error over the last two axes (H, W)."""
    a, b = _pair(real, generated)
    return _reduce(np.abs(a - b).mean(axis=(-2, -1)))


def psnr(real: Any, generated: Any, data_range: float) -> np.ndarray | float:
    """Peak signal-to-noise ratio ``10 log10(data_range^2 / MSE)`` in dB (``inf`` for identical images)."""
    if not data_range > 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    err = np.asarray(mse(real, generated))
    with np.errstate(divide="ignore"):
        return _reduce(10 * np.log10(data_range**2 / err))


def pcc(real: Any, generated: Any) -> np.ndarray | float:
    """Pearson correlation of the flattened images (NaN when either image is constant)."""
    a, b = _pair(real, generated)
    a = a.reshape(*a.shape[:-2], -1)
    b = b.reshape(*b.shape[:-2], -1)
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    denom = np.sqrt((a**2).sum(axis=-1) * (b**2).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return _reduce(np.where(denom > 0, (a * b).sum(axis=-1) / np.where(denom > 0, denom, 1), np.nan))


def ssim(real: Any, generated: Any, data_range: float) -> np.ndarray | float:
    """Structural similarity (Wang et al. 2004): Gaussian window 11 x 11, sigma 1.5, K1 = 0.01, K2 = 0.03.

    Computed with ``torchmetrics.functional.structural_similarity_index_measure`` on each 2-D image (valid region,
    mean over the image).

    Parameters
    ----------
    real, generated : array_like, shape (..., H, W) with H, W >= 11
    data_range : float
        The images' declared range (``L`` in the SSIM constants ``(K L)^2``).

    Returns
    -------
    float or ndarray, shape (...)
        1 for identical images.
    """
    from torchmetrics.functional.image import structural_similarity_index_measure

    if not data_range > 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    a, b = _pair(real, generated)
    lead = a.shape[:-2]
    ta = torch.from_numpy(a.reshape(-1, 1, *a.shape[-2:]))
    tb = torch.from_numpy(b.reshape(-1, 1, *b.shape[-2:]))
    values = structural_similarity_index_measure(tb, ta, data_range=data_range, reduction="none")
    return _reduce(values.double().numpy().reshape(lead))


def pixel_metrics(real: Any, generated: Any, data_range: float) -> dict[str, np.ndarray | float]:
    """All pixel metrics at once: ``{'ssim', 'psnr', 'pcc', 'mse', 'mae'}`` -> per-image (per-channel) values."""
    return {
        "ssim": ssim(real, generated, data_range),
        "psnr": psnr(real, generated, data_range),
        "pcc": pcc(real, generated),
        "mse": mse(real, generated),
        "mae": mae(real, generated),
    }
