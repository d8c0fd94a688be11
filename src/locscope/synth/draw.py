"""Drawing primitives of the simulator: smooth noise, discs, filaments. All vectorised NumPy / SciPy, row-col axes."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    """Gaussian-filtered white noise with zero mean and unit standard deviation, float32 ``shape``.

    Large ``sigma_px`` (> 1/8 of the image) is drawn on a coarse grid and upsampled (same look, much faster).
    """
    h, w = shape
    sigma_px = max(float(sigma_px), 0.3)
    if sigma_px > 0.125 * max(h, w) and max(h, w) > 16:
        factor = sigma_px / 2.0
        coarse = (max(2, int(math.ceil(h / factor)) + 2), max(2, int(math.ceil(w / factor)) + 2))
        small = ndimage.gaussian_filter(rng.standard_normal(coarse).astype(np.float32), 1.0, mode="wrap")
        field = ndimage.zoom(small, (h / (coarse[0] - 2), w / (coarse[1] - 2)), order=1, grid_mode=True, mode="nearest")
        field = field[:h, :w]
        if field.shape != (h, w):  # rounding of zoom's output shape
            field = np.pad(field, ((0, h - field.shape[0]), (0, w - field.shape[1])), mode="edge")
    else:
        field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_px, mode="wrap")
    std = float(field.std())
    return ((field - field.mean()) / (std if std > 0 else 1.0)).astype(np.float32)


def _kernel_peak(sigma: float, truncate: float = 4.0) -> float:
    """Centre value of SciPy's normalised discrete 2-D Gaussian kernel (separable: the 1-D peak squared)."""
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return float((1.0 / k.sum()) ** 2)


def discs(shape: tuple[int, int], centres: np.ndarray, radii: np.ndarray, sigma: float | None = None,
          within: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise round blobs at sub-image positions with one Gaussian filter.

    Each centre becomes an impulse of weight ``exp(r^2 / 2 s^2)``; after filtering with a Gaussian of std ``s`` the
    response divided by the kernel peak is >= 1 exactly within distance ``r`` of an isolated centre, so thresholding at 1
    gives discs of the requested radii (touching discs merge, as organelles do).

    Parameters
    ----------
    shape : tuple of int
        ``(H, W)``.
    centres : ndarray, shape (K, 2)
        Row, column positions in pixels (rounded to the pixel grid).
    radii : ndarray, shape (K,)
        Radii in pixels (>= 0.5 always covers the centre pixel).
    sigma : float, optional
        Filter width; default ``0.7 * median(radii)`` (at least 0.6 px).
    within : ndarray of bool, shape (H, W), optional
        Restrict the mask and profile to this region.

    Returns
    -------
    mask : ndarray of bool, shape (H, W)
    profile : ndarray of float32, shape (H, W)
        The filtered response normalised to a peak of 1 (brighter disc centres), zero outside ``mask``.
    """
    h, w = shape
    mask = np.zeros(shape, dtype=bool)
    profile = np.zeros(shape, dtype=np.float32)
    centres = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    radii = np.maximum(np.asarray(radii, dtype=np.float64).reshape(-1), 0.5)
    if len(centres) == 0:
        return mask, profile
    rows = np.clip(np.rint(centres[:, 0]).astype(np.int64), 0, h - 1)
    cols = np.clip(np.rint(centres[:, 1]).astype(np.int64), 0, w - 1)
    s = max(0.6, 0.7 * float(np.median(radii))) if sigma is None else float(sigma)
    weights = np.exp(np.minimum(radii**2 / (2 * s * s), 12.0))
    impulses = np.bincount(rows * w + cols, weights=weights, minlength=h * w).reshape(shape).astype(np.float32)
    response = ndimage.gaussian_filter(impulses, s, mode="constant") / _kernel_peak(s)
    mask = response >= 0.999
    profile = np.where(mask, np.minimum(response / weights.max(), 1.0), 0.0).astype(np.float32)
    if within is not None:
        mask &= within
        profile[~within] = 0.0
    return mask, profile


def random_walks(rng: np.random.Generator, starts: np.ndarray, headings: np.ndarray, n_steps: int, step_px: float,
                 turn_sd: float, drift: np.ndarray | None = None) -> np.ndarray:
    """Curved filaments as persistent random walks.

    Parameters
    ----------
    starts : ndarray, shape (F, 2)
        Start points (row, col) in pixels.
    headings : ndarray, shape (F,)
        Initial directions in radians (0 = +row).
    n_steps : int
        Points per filament.
    step_px : float
        Distance between consecutive points (<= 0.7 px leaves no gaps when rasterised).
    turn_sd : float
        Standard deviation of the heading change per step, radians (0 = straight).
    drift : ndarray, shape (F,), optional
        A constant heading change per step (steady bending), radians.

    Returns
    -------
    ndarray, shape (F, n_steps, 2)
    """
    starts = np.asarray(starts, dtype=np.float64).reshape(-1, 2)
    f = len(starts)
    turns = rng.normal(0.0, turn_sd, size=(f, n_steps)) if turn_sd > 0 else np.zeros((f, n_steps))
    if drift is not None:
        turns = turns + np.asarray(drift, dtype=np.float64).reshape(-1, 1)
    turns[:, 0] = 0.0
    heading = np.asarray(headings, dtype=np.float64).reshape(-1, 1) + np.cumsum(turns, axis=1)  # (F, n_steps)
    steps = np.stack([np.cos(heading), np.sin(heading)], axis=-1) * step_px  # (F, n_steps, 2)
    steps[:, 0] = 0.0
    return starts[:, None, :] + np.cumsum(steps, axis=1)


def clip_paths(paths: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Keep each path's points from where it first enters ``region`` (bool ``(H, W)``) until it first leaves it.

    Paths starting inside keep their start; paths starting outside (e.g. at the centrosome of a cell cut by the image
    border) are kept from their entry point. Returns a bool ``(F, n_steps)``.
    """
    h, w = region.shape
    rows = np.rint(paths[..., 0]).astype(np.int64)
    cols = np.rint(paths[..., 1]).astype(np.int64)
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    inside[inside] = region[rows[inside], cols[inside]]
    started = np.cumsum(inside, axis=1) > 0
    exited = np.cumsum(started & ~inside, axis=1) > 0
    return inside & ~exited


def rasterize(points: np.ndarray, weights: np.ndarray | float, shape: tuple[int, int]) -> np.ndarray:
    """Accumulate ``points`` (N, 2) with ``weights`` into a float32 image ``shape`` (nearest pixel; outside ignored)."""
    h, w = shape
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    rows = np.rint(pts[:, 0]).astype(np.int64)
    cols = np.rint(pts[:, 1]).astype(np.int64)
    ok = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    wts = np.broadcast_to(np.asarray(weights, dtype=np.float64), (len(pts),))[ok]
    return np.bincount(rows[ok] * w + cols[ok], weights=wts, minlength=h * w).reshape(shape).astype(np.float32)


def sample_points(rng: np.random.Generator, weight: np.ndarray, n: int) -> np.ndarray:
    """Draw ``n`` pixel positions (row, col) with probability proportional to ``weight`` (H, W), jittered sub-pixel."""
    flat = np.clip(weight.astype(np.float64).ravel(), 0.0, None)
    total = flat.sum()
    if n <= 0 or total <= 0:
        return np.zeros((0, 2))
    cumulative = np.cumsum(flat)
    idx = np.minimum(np.searchsorted(cumulative, rng.random(n) * cumulative[-1], side="right"), flat.size - 1)
    pts = np.stack(np.unravel_index(idx, weight.shape), axis=-1).astype(np.float64)
    return pts + rng.uniform(-0.45, 0.45, size=pts.shape)
