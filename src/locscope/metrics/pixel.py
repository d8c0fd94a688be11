"""Pixel-wise image similarity (guided-I2I, proteoscope): SSIM, PSNR, PCC, MSE and MAE, per image and channel.

All functions take ``(H, W)``, ``(B, H, W)`` or ``(B, C, H, W)`` arrays (numpy or torch) and return one value per
image and channel (the leading dimensions), to be averaged (mean and std) over images. SSIM and PSNR need the
images' *declared* data range (e.g. 1.0 for [0, 1] floats, 255 for 8-bit): state it in every report.
"""

from __future__ import annotations

import warnings
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
    """Peak signal-to-noise ratio ``10 log10(data_range^2 / MSE)`` in dB (``inf`` for identical images), per image
    (torchmetrics' ``peak_signal_noise_ratio`` over the last two axes, in float64)."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    if not data_range > 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    a, b = _pair(real, generated)
    value = peak_signal_noise_ratio(torch.from_numpy(b), torch.from_numpy(a), data_range=data_range,
                                    reduction="none", dim=(-2, -1))
    return _reduce(value.numpy())


def pcc(real: Any, generated: Any) -> np.ndarray | float:
    """Pearson correlation of the flattened images (NaN when either image is constant; torchmetrics'
    ``pearson_corrcoef`` over each image's pixels, in float64)."""
    from torchmetrics.functional import pearson_corrcoef

    a, b = _pair(real, generated)
    lead = a.shape[:-2]
    columns = [torch.from_numpy(x.reshape(-1, x.shape[-2] * x.shape[-1]).T.copy()) for x in (b, a)]  # (H*W, n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it warns about constant images, which give NaN as documented
        value = pearson_corrcoef(*columns).reshape(lead)
    return _reduce(value.numpy())


SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


def _gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    x = np.arange(size) - (size - 1) / 2
    g = np.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def _filter_valid(images: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Separable correlation over the last two axes, keeping only fully covered ("valid") positions."""
    k = window.size
    rows = np.lib.stride_tricks.sliding_window_view(images, k, axis=-2) @ window   # (..., H-k+1, W)
    return np.lib.stride_tricks.sliding_window_view(rows, k, axis=-1) @ window     # (..., H-k+1, W-k+1)


def ssim(real: Any, generated: Any, data_range: float) -> np.ndarray | float:
    """Structural similarity (Wang et al. 2004): Gaussian window 11 x 11, sigma 1.5, K1 = 0.01, K2 = 0.03.

    The images are reflect-padded by 5 pixels, the SSIM map is computed at every original pixel and averaged: what
    ``torchmetrics.functional.structural_similarity_index_measure`` returns with its defaults (a test checks the
    agreement). Not torchmetrics itself: separable float64 filters are an order of magnitude faster on the CPU than
    its 2-D convolution, and evaluation runs SSIM on every generated image.

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
    if not data_range > 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    a, b = _pair(real, generated)
    if min(a.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW} x {SSIM_WINDOW} pixels, got {a.shape[-2:]}")
    window = _gaussian_window()
    pad = [(0, 0)] * (a.ndim - 2) + [(SSIM_WINDOW // 2, SSIM_WINDOW // 2)] * 2
    a, b = np.pad(a, pad, mode="reflect"), np.pad(b, pad, mode="reflect")
    mu_a, mu_b = _filter_valid(a, window), _filter_valid(b, window)
    var_a = np.clip(_filter_valid(a * a, window) - mu_a**2, 0, None)
    var_b = np.clip(_filter_valid(b * b, window) - mu_b**2, 0, None)
    cov = _filter_valid(a * b, window) - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return _reduce(ssim_map.mean(axis=(-2, -1)))


def pixel_metrics(real: Any, generated: Any, data_range: float) -> dict[str, np.ndarray | float]:
    """All pixel metrics at once: ``{'ssim', 'psnr', 'pcc', 'mse', 'mae'}`` -> per-image (per-channel) values."""
    return {
        "ssim": ssim(real, generated, data_range),
        "psnr": psnr(real, generated, data_range),
        "pcc": pcc(real, generated),
        "mse": mse(real, generated),
        "mae": mae(real, generated),
    }
