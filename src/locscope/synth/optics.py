"""The microscope: optical blur, uneven illumination, background, Poisson (shot) and Gaussian (read) noise.

Applied to a clean image whose full intensity is 1: ``clip(Poisson(photons * (illum * blur(x) + bg)) / photons
+ N(0, read_noise), 0, 1)``, the Poisson term drawn with its normal approximation (same mean and variance; every
pixel holds at least ``photons * background`` = 9 counts at the defaults). The illumination field is shared by all channels of one image (same optical path).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from locscope.synth.config import SimulatorConfig
from locscope.synth.draw import smooth_noise


def illumination_field(cfg: SimulatorConfig, rng: np.random.Generator) -> np.ndarray:
    """A smooth multiplicative field ``(size, size)`` around 1 (vignetting-like), float32."""
    shape = (cfg.size, cfg.size)
    if cfg.illumination <= 0:
        return np.ones(shape, dtype=np.float32)
    field = smooth_noise(rng, shape, cfg.size / 3.0)
    return np.clip(1.0 + cfg.illumination * field / 2.0, 0.3, 2.0).astype(np.float32)


def apply_optics(image: np.ndarray, cfg: SimulatorConfig, rng: np.random.Generator,
                 illumination: np.ndarray | None = None) -> np.ndarray:
    """Image ``(H, W)`` clean intensities (full scale 1) -> a noisy microscope image, float32 in [0, 1]."""
    img = image.astype(np.float32, copy=True)
    sigma_px = cfg.blur_nm / cfg.resolved_pixel_size_nm
    if sigma_px > 0.05:
        img = ndimage.gaussian_filter(img, sigma_px, mode="nearest")
    if illumination is not None:
        img *= illumination
    img += cfg.background
    if cfg.photons > 0:
        # shot noise: Poisson(photons * x) / photons. The background alone gives photons * background >= 9 counts at
        # the defaults, where the normal approximation with the same mean and variance is close and ~5x faster.
        signal = np.clip(img, 0, None)
        img = signal + np.sqrt(signal / np.float32(cfg.photons)) * rng.standard_normal(img.shape, dtype=np.float32)
    if cfg.read_noise > 0:
        img += rng.normal(0.0, cfg.read_noise, size=img.shape).astype(np.float32)
    return np.clip(img, 0.0, 1.0).astype(np.float32)
