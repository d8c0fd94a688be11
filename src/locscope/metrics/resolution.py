"""MSF resolvability (CELL-Diff): the finest spatial period whose power survives, in nm (lower = finer detail).

For a square ``N x N`` image: normalise the total intensity to 1000, take the power spectrum
``P = |fftshift(FFT2(I))|^2 / N^2``, sum it in unit-width rings around the zero frequency (row ``N // 2``, column
``N // 2``; a pixel at distance ``d`` falls in bin ``floor(d)``, as DIPlib's ``RadialSum`` which the published code
calls), keep the first ``N // 2`` bins, find the first bin ``k`` below ``1e-3`` (``k = N // 2`` when none is) and report
``N * pixel_size_nm / k``. Noisy 8-bit images rarely fall below the threshold, so they saturate at ``2 * pixel_size_nm``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from locscope.metrics.arrays import as_image_batch, to_numpy

#: Pixel sizes (nm) of the published datasets: HPA 1024-pixel crops downsampled 4x to 256, OpenCell crops.
PIXEL_SIZE_NM = {"hpa": 320.0, "opencell": 206.0}
MSF_THRESHOLD = 1e-3
TOTAL_INTENSITY = 1000.0


@dataclass(frozen=True)
class MSFResult:
    """MSF resolvability of one image.

    Attributes
    ----------
    resolution_nm : float
        ``N * pixel_size_nm / cutoff_bin`` (NaN for an image with zero total intensity).
    cutoff_bin : int
        First radial bin whose power is below the threshold (``N // 2`` when none is).
    radial_sum : ndarray, shape (N // 2,)
        Ring sums of the normalised power spectrum.
    """

    resolution_nm: float
    cutoff_bin: int
    radial_sum: np.ndarray


def _check_square(image: np.ndarray) -> int:
    if image.ndim != 2 or image.shape[0] != image.shape[1]:
        raise ValueError(f"MSF needs a square 2-D image (N, N), got shape {image.shape}")
    return image.shape[0]


def power_spectrum(image: Any) -> np.ndarray:
    """Centred power spectrum ``|fftshift(FFT2(I))|^2 / N^2`` after normalising the total intensity to 1000.

    Parameters
    ----------
    image : array_like, shape (N, N)
        Non-negative intensities (any scale).

    Returns
    -------
    ndarray, shape (N, N), float64
        Zero frequency at ``(N // 2, N // 2)``; all NaN when the image sums to zero.
    """
    img = to_numpy(image)
    n = _check_square(img)
    total = img.sum()
    if total == 0 or not np.isfinite(total):
        return np.full(img.shape, np.nan)
    normalised = TOTAL_INTENSITY * img / total
    return np.abs(np.fft.fftshift(np.fft.fft2(normalised))) ** 2 / n**2


def radial_sum(image: Any, n_bins: int | None = None) -> np.ndarray:
    """Sum of ``image`` in unit-width rings around the centre pixel ``(N // 2, N // 2)`` (DIPlib ``RadialSum``).

    Parameters
    ----------
    image : array_like, shape (N, N)
    n_bins : int, optional
        Number of bins kept (default ``N // 2``). Bin ``r`` holds the pixels at Euclidean distance ``d`` with
        ``floor(d) == r``.

    Returns
    -------
    ndarray, shape (n_bins,)

    Examples
    --------
    >>> radial_sum(np.ones((4, 4)))   # centre (2, 2): 1 pixel at d=0, 4 at d=1, 4 at d=sqrt(2)
    array([1., 8.])
    """
    img = to_numpy(image)
    n = _check_square(img)
    n_bins = n // 2 if n_bins is None else int(n_bins)
    rows, cols = np.indices(img.shape)
    centre = n // 2
    bins = np.floor(np.hypot(rows - centre, cols - centre)).astype(np.int64)
    sums = np.bincount(bins.ravel(), weights=img.ravel(), minlength=n_bins)
    return sums[:n_bins]


def msf(image: Any, pixel_size_nm: float, threshold: float = MSF_THRESHOLD) -> MSFResult:
    """MSF resolvability of one image, in nm.

    Parameters
    ----------
    image : array_like, shape (N, N)
        Protein image; CELL-Diff reads its saved 8-bit PNG back and divides by 255 (the scale cancels out).
    pixel_size_nm : float
        Physical pixel size: 320 nm for CELL-Diff's HPA crops, 206 nm for OpenCell (:data:`PIXEL_SIZE_NM`).
    threshold : float, default 1e-3
        Power below which a radial bin counts as unresolved.

    Returns
    -------
    MSFResult

    Examples
    --------
    >>> msf(np.random.default_rng(0).random((64, 64)), pixel_size_nm=320).resolution_nm   # white noise saturates
    640.0
    """
    if not pixel_size_nm > 0:
        raise ValueError(f"pixel_size_nm must be positive, got {pixel_size_nm}")
    spectrum = power_spectrum(image)
    n = spectrum.shape[0]
    sums = radial_sum(spectrum)
    if np.isnan(sums).any():
        return MSFResult(float("nan"), n // 2, sums)
    below = np.flatnonzero(sums < threshold)
    # Bin 0 holds the (normalised) total power and is never below the threshold for a non-empty image.
    cutoff = int(below[0]) if below.size else n // 2
    cutoff = max(cutoff, 1)
    return MSFResult(n * float(pixel_size_nm) / cutoff, cutoff, sums)


def msf_resolution_nm(images: Any, pixel_size_nm: float, threshold: float = MSF_THRESHOLD) -> np.ndarray | float:
    """MSF resolvability in nm of an image ``(N, N)`` or of each image of a batch ``(B, N, N)``.

    Returns
    -------
    float or ndarray, shape (B,)
        Report the mean over generated images and, separately, over real images (CELL-Diff: 642.03 nm on HPA).
    """
    batch, single = as_image_batch(images, "images")
    values = np.array([msf(image, pixel_size_nm, threshold).resolution_nm for image in batch])
    return float(values[0]) if single else values
