"""Image transforms: plain functions over NumPy arrays and torch tensors.

Conventions
-----------
- Images are ``(..., H, W)``: the last two axes are rows and columns; leading axes (channels, batch) are carried along.
  Per-channel reductions reduce over the last two axes; joint ones over the last three (all channels of one cell).
- Geometric transforms that must hit every channel and mask identically (crop, rotation, flip) take *several* arrays at
  once, as a dict, list or tuple (returned in the same container), and draw one random choice for all of them.
- NumPy in -> NumPy out, torch in -> torch out (same device). Normalisations return float32.
- Randomness comes from a ``numpy.random.Generator`` or an int seed.
- Constant images (max == min, std == 0) normalise to zeros instead of dividing by zero; NaN inputs propagate.
"""

from __future__ import annotations

from typing import Any, Literal, Mapping, Sequence, TypeVar

import numpy as np
import torch
from scipy import ndimage as ndi

from locscope.errors import InputError

A = TypeVar("A", np.ndarray, torch.Tensor)
Arrays = Any  # one array, or a dict / list / tuple of arrays sharing (H, W)


# ----------------------------------------------------------------------------------------------------- helpers
def _is_torch(x: Any) -> bool:
    return isinstance(x, torch.Tensor)


def _as_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _map(arrays: Arrays, fn) -> Arrays:
    """Apply ``fn`` to one array or to every array of a dict / list / tuple, keeping the container."""
    if isinstance(arrays, Mapping):
        return {key: fn(value) for key, value in arrays.items()}
    if isinstance(arrays, (list, tuple)):
        return type(arrays)(fn(value) for value in arrays)
    return fn(arrays)


def _spatial_shape(arrays: Arrays) -> tuple[int, int]:
    """The common (H, W) of all arrays; InputError naming the first mismatch."""
    if isinstance(arrays, Mapping):
        named = list(arrays.items())
    elif isinstance(arrays, (list, tuple)):
        named = list(enumerate(arrays))
    else:
        named = [(0, arrays)]
    if not named:
        raise InputError("no arrays given")
    shapes = {name: tuple(a.shape[-2:]) for name, a in named}
    first_name, first = named[0][0], shapes[named[0][0]]
    for name, shape in shapes.items():
        if len(shape) != 2:
            raise InputError(f"array {name!r}: need at least 2 dimensions (H, W), got shape {tuple(dict(named)[name].shape)}")
        if shape != first:
            raise InputError(f"array {name!r}: spatial shape {shape} differs from {first_name!r} {first}")
    return first  # type: ignore[return-value]


def _pair(size: int | Sequence[int], name: str = "size") -> tuple[int, int]:
    pair = (int(size), int(size)) if np.isscalar(size) else tuple(int(s) for s in size)  # type: ignore[arg-type]
    if len(pair) != 2 or min(pair) < 1:
        raise InputError(f"{name} {size!r}: need a positive int or (height, width)")
    return pair  # type: ignore[return-value]


def _float(x: A) -> A:
    if _is_torch(x):
        return x.float() if x.dtype != torch.float32 else x
    return np.asarray(x, dtype=np.float32)


def _axes(x: Any, joint: bool) -> tuple[int, ...]:
    return (-3, -2, -1) if joint and x.ndim >= 3 else (-2, -1)


def _amin(x: A, axes: tuple[int, ...]) -> A:
    return x.amin(dim=axes, keepdim=True) if _is_torch(x) else x.min(axis=axes, keepdims=True)


def _amax(x: A, axes: tuple[int, ...]) -> A:
    return x.amax(dim=axes, keepdim=True) if _is_torch(x) else x.max(axis=axes, keepdims=True)


def _scale(x: A, low: A, high: A) -> A:
    """(x - low) / (high - low), 0 where high == low."""
    span = high - low
    if _is_torch(x):
        safe = torch.where(span > 0, span, torch.ones_like(span))
        return torch.where(span > 0, (x - low) / safe, torch.zeros_like(x))
    safe = np.where(span > 0, span, 1.0)
    return np.where(span > 0, (x - low) / safe, 0.0).astype(np.float32)


# ----------------------------------------------------------------------------------------------------- geometry
def crop(image: A, top: int, left: int, height: int, width: int) -> A:
    """Crop rows ``top:top+height`` and columns ``left:left+width`` of ``image`` ``(..., H, W)``."""
    rows, cols = image.shape[-2:]
    if top < 0 or left < 0 or top + height > rows or left + width > cols:
        raise InputError(f"crop window rows {top}:{top + height}, cols {left}:{left + width} outside image {rows}x{cols}")
    return image[..., top: top + height, left: left + width]


def random_crop(arrays: Arrays, size: int | Sequence[int], rng: np.random.Generator | int | None = None) -> Arrays:
    """Crop the same random window of ``size`` pixels out of every array.

    Parameters
    ----------
    arrays : array or dict / list / tuple of arrays ``(..., H, W)``
        Channels and masks of one cell (all with the same H, W).
    size : int or (height, width)
        Window size in pixels (<= the image size).
    rng : numpy.random.Generator or int, optional
        Source of the window position.

    Returns
    -------
    The cropped arrays, in the same container.

    Examples
    --------
    >>> out = random_crop({"protein": np.zeros((8, 8)), "nucleus": np.ones((8, 8))}, 4, rng=0)
    >>> out["protein"].shape
    (4, 4)
    """
    rows, cols = _spatial_shape(arrays)
    height, width = _pair(size)
    if height > rows or width > cols:
        raise InputError(f"crop size {height}x{width} is larger than the image {rows}x{cols}")
    generator = _as_rng(rng)
    top = int(generator.integers(0, rows - height + 1))
    left = int(generator.integers(0, cols - width + 1))
    return _map(arrays, lambda a: crop(a, top, left, height, width))


def center_crop(arrays: Arrays, size: int | Sequence[int]) -> Arrays:
    """Crop the central ``size`` window (rounded towards the top-left) of every array."""
    rows, cols = _spatial_shape(arrays)
    height, width = _pair(size)
    if height > rows or width > cols:
        raise InputError(f"crop size {height}x{width} is larger than the image {rows}x{cols}")
    top, left = (rows - height) // 2, (cols - width) // 2
    return _map(arrays, lambda a: crop(a, top, left, height, width))


def resize(image: A, size: int | Sequence[int], order: Literal[0, 1, 3] | None = None) -> A:
    """Resize ``image`` ``(..., H, W)`` to ``size`` pixels.

    Parameters
    ----------
    image : ndarray or Tensor ``(..., H, W)``
    size : int or (height, width)
    order : {0, 1, 3}, optional
        Interpolation: 0 nearest, 1 (bi)linear, 3 (bi)cubic. Default 1, and 0 for boolean masks (which stay boolean).
        Downsampling with order > 0 is anti-aliased (scikit-image / torch ``antialias=True``).

    Returns
    -------
    ndarray or Tensor ``(..., height, width)``
        Float32 for order > 0 (values keep their range); the input dtype for order 0.
    """
    height, width = _pair(size)
    is_bool = image.dtype == (torch.bool if _is_torch(image) else np.bool_)
    if order is None:
        order = 0 if is_bool else 1
    if order not in (0, 1, 3):
        raise InputError(f"resize order {order!r}: accepted values are 0 (nearest), 1 (linear), 3 (cubic)")
    rows, cols = image.shape[-2:]
    if (rows, cols) == (height, width):
        return image
    lead = tuple(image.shape[:-2])
    if _is_torch(image):
        flat = image.reshape(-1, 1, rows, cols)
        if order == 0:
            out = torch.nn.functional.interpolate(flat.float(), size=(height, width), mode="nearest-exact")
            return out.to(image.dtype).reshape(*lead, height, width)
        mode = "bilinear" if order == 1 else "bicubic"
        down = height < rows or width < cols
        out = torch.nn.functional.interpolate(flat.float(), size=(height, width), mode=mode, align_corners=False,
                                              antialias=down)
        return out.reshape(*lead, height, width)
    from skimage.transform import resize as sk_resize

    down = height < rows or width < cols
    out = sk_resize(image.astype(np.float32) if not is_bool else image, (*lead, height, width), order=order,
                    preserve_range=True, anti_aliasing=bool(down and order > 0), mode="reflect")
    if order == 0:
        return out.astype(image.dtype)
    return out.astype(np.float32)


def resize_to_model(image: np.ndarray, size: int) -> np.ndarray:
    """Resize an image ``(H, W)`` to a model's square input ``(size, size)``: area averaging when the image has at least
    ``size`` rows (every output pixel is the mean of the input pixels it covers), bilinear interpolation when it has
    fewer (no anti-aliasing is needed going up). Float32 out; an image of that size is returned as float32 as it is.

    Examples
    --------
    >>> resize_to_model(np.arange(16, dtype=np.float32).reshape(4, 4), 2).tolist()
    [[2.5, 4.5], [10.5, 12.5]]
    """
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    mode = "area" if image.shape[0] >= size else "bilinear"
    return torch.nn.functional.interpolate(tensor, size=(size, size), mode=mode)[0, 0].numpy()


def rot90(image: A, k: int = 1) -> A:
    """Rotate ``image`` ``(..., H, W)`` by ``k`` x 90 degrees counter-clockwise (contiguous result)."""
    if _is_torch(image):
        return torch.rot90(image, k, dims=(-2, -1)).contiguous()
    return np.ascontiguousarray(np.rot90(image, k, axes=(-2, -1)))


def flip(image: A, axis: Literal["rows", "cols"] = "cols") -> A:
    """Mirror ``image`` ``(..., H, W)``: ``'cols'`` reverses the column order (left-right), ``'rows'`` the row order."""
    if axis == "cols":
        dim = -1
    elif axis == "rows":
        dim = -2
    else:
        raise InputError(f"flip axis {axis!r}: accepted values are 'rows', 'cols'")
    if _is_torch(image):
        return torch.flip(image, dims=(dim,))
    return np.ascontiguousarray(np.flip(image, axis=dim))


def dihedral(arrays: Arrays, index: int) -> Arrays:
    """Apply one of the 8 symmetries of the square: ``index % 4`` quarter turns, then a left-right flip if ``index >= 4``."""
    if not 0 <= index < 8:
        raise InputError(f"dihedral index {index}: accepted values are 0..7")
    _spatial_shape(arrays)

    def apply(a):
        out = rot90(a, index % 4)
        return flip(out, "cols") if index >= 4 else out

    return _map(arrays, apply)


def random_dihedral(arrays: Arrays, rng: np.random.Generator | int | None = None) -> Arrays:
    """Apply the same random 90-degree rotation and flip (uniform over the 8 symmetries) to every array."""
    return dihedral(arrays, int(_as_rng(rng).integers(0, 8)))


# ----------------------------------------------------------------------------------------------------- normalisation
def minmax_per_channel(image: A) -> A:
    """Scale each channel ``(H, W)`` of ``image`` ``(..., H, W)`` to [0, 1] by its own min and max (float32).

    Examples
    --------
    >>> minmax_per_channel(np.array([[[0, 5], [10, 20]]])).tolist()
    [[[0.0, 0.25], [0.5, 1.0]]]
    """
    x = _float(image)
    axes = _axes(x, joint=False)
    return _scale(x, _amin(x, axes), _amax(x, axes))


def minmax_joint(image: A) -> A:
    """Scale all channels of each cell ``(..., C, H, W)`` to [0, 1] by one min and max over C, H, W (as SubCell does)."""
    x = _float(image)
    axes = _axes(x, joint=True)
    return _scale(x, _amin(x, axes), _amax(x, axes))


def percentile_normalize(image: A, low: float = 1.0, high: float = 99.0, clip: bool = True) -> A:
    """Map each channel's ``low``-th percentile to 0 and ``high``-th to 1 (linear interpolation of percentiles).

    Parameters
    ----------
    image : ``(..., H, W)``
    low, high : float
        Percentiles in [0, 100], ``low < high``.
    clip : bool
        Clip the result to [0, 1].
    """
    if not 0 <= low < high <= 100:
        raise InputError(f"percentiles low={low}, high={high}: need 0 <= low < high <= 100")
    x = _float(image)
    if _is_torch(x):
        flat = x.reshape(*x.shape[:-2], -1)
        q = torch.quantile(flat, torch.tensor([low / 100, high / 100], device=x.device), dim=-1, keepdim=True)
        lo, hi = q[0].unsqueeze(-1), q[1].unsqueeze(-1)
        out = _scale(x, lo, hi)
        return out.clamp(0, 1) if clip else out
    lo = np.percentile(x, low, axis=(-2, -1), keepdims=True)
    hi = np.percentile(x, high, axis=(-2, -1), keepdims=True)
    out = _scale(x, lo, hi)
    return np.clip(out, 0, 1) if clip else out


def standardize(image: A, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                clip: float | None = None) -> A:
    """Z-score each channel: ``(x - mean) / std`` (float32), with the image's own statistics unless given.

    Parameters
    ----------
    image : ``(..., C, H, W)`` or ``(H, W)``
    mean, std : sequences of C floats, optional
        Dataset statistics per channel; by default each channel's own mean and (population) standard deviation.
    clip : float, optional
        Clip the result to ``[-clip, clip]`` (the Cell Painting model clips at 15).

    NumPy input is standardized in float64 (statistics and arithmetic, as the published Cell Painting
    preprocessing does) and returned as float32.
    """
    x = _float(image)
    if (mean is None) != (std is None):
        raise InputError("standardize: give both mean and std, or neither")
    if mean is None:
        if _is_torch(x):
            mu = x.mean(dim=(-2, -1), keepdim=True)
            sigma = x.std(dim=(-2, -1), keepdim=True, unbiased=False)
        else:
            mu = x.mean(axis=(-2, -1), keepdims=True, dtype=np.float64)
            sigma = x.std(axis=(-2, -1), keepdims=True, dtype=np.float64)
    else:
        channels = x.shape[-3] if x.ndim >= 3 else 1
        if len(mean) != channels or len(std) != channels:  # type: ignore[arg-type]
            raise InputError(f"standardize: {len(mean)} means / {len(std)} stds for {channels} channels")  # type: ignore[arg-type]
        shape = (channels, 1, 1) if x.ndim >= 3 else (1, 1)
        if _is_torch(x):
            mu = torch.tensor(mean, dtype=torch.float32, device=x.device).reshape(shape)
            sigma = torch.tensor(std, dtype=torch.float32, device=x.device).reshape(shape)
        else:
            mu = np.asarray(mean, dtype=np.float32).reshape(shape)
            sigma = np.asarray(std, dtype=np.float32).reshape(shape)
    if _is_torch(x):
        out = torch.where(sigma > 0, (x - mu) / torch.where(sigma > 0, sigma, torch.ones_like(sigma)), torch.zeros_like(x))
        return out.clamp(-clip, clip) if clip is not None else out
    out = np.where(sigma > 0, (x - mu) / np.where(sigma > 0, sigma, 1.0), 0.0).astype(np.float32)
    return np.clip(out, -clip, clip) if clip is not None else out


def to_minus_one_one(image: A, low: float | None = None, high: float | None = None) -> A:
    """Map ``[low, high]`` linearly to [-1, 1] (float32); the range defaults to the integer dtype's (0..255, 0..65535)
    or [0, 1] for floats.

    Examples
    --------
    >>> to_minus_one_one(np.array([0, 255], dtype=np.uint8)).tolist()
    [-1.0, 1.0]
    """
    if low is None or high is None:
        dtype = image.dtype
        if _is_torch(image):
            dtype = torch.empty(0, dtype=dtype).numpy().dtype if dtype != torch.bfloat16 else np.dtype(np.float32)
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            low, high = (float(info.min) if low is None else low), (float(info.max) if high is None else high)
        else:
            low, high = (0.0 if low is None else low), (1.0 if high is None else high)
    if not high > low:
        raise InputError(f"to_minus_one_one: need high > low, got low={low}, high={high}")
    return _float(image) * (2.0 / (high - low)) - (2.0 * low / (high - low) + 1.0)


def to_unit_range(image: np.ndarray, *, out_of_range: Literal["clip", "raise"] = "clip", where: str = "image",
                  dtype: type = np.float32) -> np.ndarray:
    """Scale an image to [0, 1] by what its dtype says: booleans as 0 / 1, integers by their dtype's maximum, floats
    with negative values as [-1, 1] (``(x + 1) / 2``), other floats as [0, 1] already.

    Parameters
    ----------
    image : np.ndarray
        ``(..., H, W)`` any dtype.
    out_of_range : {'clip', 'raise'}
        What happens to floats outside [0, 1] after that mapping (or outside [-1, 1]): clipped (a model's input), or
        an :class:`~locscope.errors.InputError` (scores, whose range must be declared).
    where : str
        What the image is, for the error message (``"x.tif channel 'protein'"``).
    dtype : numpy float dtype
        Output (and arithmetic) precision.

    Examples
    --------
    >>> to_unit_range(np.array([0, 65535], np.uint16)).tolist()
    [0.0, 1.0]
    >>> to_unit_range(np.array([-1.0, 0.0, 1.0])).tolist()
    [0.0, 0.5, 1.0]
    """
    arr = np.asarray(image)
    if arr.dtype == bool:
        return arr.astype(dtype)
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(dtype) / np.iinfo(arr.dtype).max
    arr = arr.astype(dtype)
    if out_of_range == "clip":
        return np.clip((arr + 1) / 2 if arr.min() < 0 else arr, 0.0, 1.0)
    if out_of_range != "raise":
        raise ValueError(f"out_of_range={out_of_range!r}: accepted values are clip, raise")
    if not np.isfinite(arr).all():
        raise InputError(f"{where}: image contains NaN or infinite values")
    low, high = arr.min(), arr.max()
    if low >= 0 and high <= 1:
        return arr
    if low >= -1 and high <= 1:
        return (arr + 1) / 2
    raise InputError(f"{where}: float image with values in [{low:.3g}, {high:.3g}]; expected [0, 1] or [-1, 1] "
                     f"(save integer images, or rescale)")


def from_minus_one_one(image: A) -> A:
    """Inverse of :func:`to_minus_one_one` for [0, 1]: ``(x + 1) / 2`` clipped to [0, 1]."""
    x = (_float(image) + 1.0) / 2.0
    return x.clamp(0, 1) if _is_torch(x) else np.clip(x, 0, 1)


# ----------------------------------------------------------------------------------------------------- thresholds
def lower_median(image: A) -> A:
    """Median of each image ``(..., H, W)`` with ``torch.median`` semantics: the *lower* of the two middle values.

    Returns an array of shape ``(...)``.
    """
    if _is_torch(image):
        return image.flatten(-2).median(dim=-1).values
    flat = np.asarray(image).reshape(*image.shape[:-2], -1)
    k = (flat.shape[-1] - 1) // 2
    return np.partition(flat, k, axis=-1)[..., k]


def median_threshold(image: A) -> A:
    """Binary mask ``image > lower_median(image)`` per image ``(..., H, W)`` (CELL-Diff's IoU binarisation).

    Examples
    --------
    >>> median_threshold(np.array([[1, 2], [3, 4]])).tolist()  # lower median 2
    [[False, False], [True, True]]
    """
    med = lower_median(image)
    if _is_torch(image):
        return image > med[..., None, None]
    return np.asarray(image) > np.asarray(med)[..., None, None]


# ----------------------------------------------------------------------------------------------------- nuclei
def segment_nuclei(nucleus: np.ndarray, sigma: float = 2.0, min_area: int = 30, min_distance: int = 5,
                   threshold: float | None = None) -> np.ndarray:
    """Label nuclei in a nucleus-stain image: Gaussian smoothing, Otsu threshold, hole filling, watershed split.

    Touching nuclei are separated by a watershed of the negated distance transform seeded at its local maxima
    (at least ``min_distance`` pixels apart), so two round nuclei that touch become two labels.

    Parameters
    ----------
    nucleus : ndarray ``(H, W)``
        Nucleus channel (any dtype).
    sigma : float
        Gaussian smoothing in pixels before thresholding (0 to skip).
    min_area : int
        Objects smaller than this many pixels are dropped (debris, noise).
    min_distance : int
        Minimum distance in pixels between two nucleus centres (watershed seeds).
    threshold : float, optional
        Fixed threshold on the smoothed image instead of Otsu's.

    Returns
    -------
    ndarray ``(H, W)`` int32
        0 = background, 1..n = nuclei. A constant image has no nuclei.
    """
    from skimage.feature import peak_local_max
    from skimage.filters import gaussian, threshold_otsu
    from skimage.segmentation import watershed

    image = np.asarray(nucleus)
    if image.ndim != 2:
        raise InputError(f"segment_nuclei: need one (H, W) image, got shape {image.shape}")
    smooth = gaussian(image.astype(np.float32), sigma=sigma, preserve_range=True) if sigma > 0 else image.astype(np.float32)
    if threshold is None:
        if not np.isfinite(smooth).all():
            raise InputError("segment_nuclei: the nucleus image contains NaN or inf")
        if smooth.max() == smooth.min():
            return np.zeros(image.shape, dtype=np.int32)
        threshold = float(threshold_otsu(smooth))
    mask = ndi.binary_fill_holes(smooth > threshold)
    components, n = ndi.label(mask)
    if n:
        areas = np.bincount(components.ravel())
        mask = (areas >= min_area)[components] & mask
    if not mask.any():
        return np.zeros(image.shape, dtype=np.int32)
    distance = ndi.distance_transform_edt(mask)
    components, _ = ndi.label(mask)
    peaks = peak_local_max(distance, min_distance=min_distance, labels=components, exclude_border=False,
                           num_peaks_per_label=np.inf)
    markers = np.zeros(image.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    # Plateau maxima give several adjacent peaks: merge peaks that touch into one seed.
    markers, _ = ndi.label(ndi.binary_dilation(markers > 0, iterations=1) & mask)
    labels = watershed(-distance, markers, mask=mask)
    return labels.astype(np.int32)


def nuclear_distance_map(nuclei: np.ndarray, normalize: Literal["per-nucleus", "global", "none"] = "per-nucleus"
                         ) -> np.ndarray:
    """Signed, normalised distance of every pixel to the nuclear border (proteoscope / cytoself's distance channel).

    Sign convention: **positive inside a nucleus, negative outside**, and the border (the line between a nuclear and a
    non-nuclear pixel) at 0. Distances are Euclidean, in pixels, from the pixel centre to that line, i.e. the
    distance transform minus half a pixel.

    Parameters
    ----------
    nuclei : ndarray ``(H, W)``
        Nucleus labels (int, 0 = background, e.g. from :func:`segment_nuclei`) or a boolean nucleus mask.
    normalize : {'per-nucleus', 'global', 'none'}
        ``'per-nucleus'``: inside values are divided by the largest inside distance of *their* nucleus (every nucleus
        centre is 1), outside values by the largest outside distance in the image (the farthest pixel is -1);
        ``'global'``: inside values by the largest inside distance of any nucleus; ``'none'``: distances in pixels.

    Returns
    -------
    ndarray ``(H, W)`` float32
        In [-1, 1] when normalised. Without any nucleus, every pixel is -1 (normalised) or -inf (``'none'``).

    Examples
    --------
    >>> mask = np.zeros((1, 5), bool); mask[0, :2] = True
    >>> nuclear_distance_map(mask, normalize="none").tolist()
    [[1.5, 0.5, -0.5, -1.5, -2.5]]
    """
    labels = np.asarray(nuclei)
    if labels.ndim != 2:
        raise InputError(f"nuclear_distance_map: need one (H, W) label image or mask, got shape {labels.shape}")
    if normalize not in ("per-nucleus", "global", "none"):
        raise InputError(f"normalize {normalize!r}: accepted values are 'per-nucleus', 'global', 'none'")
    if labels.dtype != bool and not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"nuclear_distance_map: need an int label image or a bool mask, got {labels.dtype}")
    mask = labels > 0 if labels.dtype != bool else labels
    if not mask.any():
        return np.full(labels.shape, -np.inf if normalize == "none" else -1.0, dtype=np.float32)
    if labels.dtype == bool:
        labels, _ = ndi.label(mask)
    # Inside: distance to the nearest pixel outside *this* nucleus (so touching nuclei keep their shared border),
    # computed in each nucleus' bounding box grown by one pixel; the image edge is not a border.
    inside = np.zeros(labels.shape, dtype=np.float64)
    for k, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        grown = tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(box, labels.shape))
        own = labels[grown] == k
        inside[grown][own] = ndi.distance_transform_edt(own)[own] - 0.5
    outside = ndi.distance_transform_edt(~mask) - 0.5
    distance = np.where(mask, inside, -outside).astype(np.float32)
    if normalize == "none":
        return distance
    out = distance.copy()
    out_max = outside[~mask].max() if (~mask).any() else 1.0
    out[~mask] = -outside[~mask] / out_max
    if normalize == "global":
        out[mask] = inside[mask] / inside[mask].max()
    else:
        peak = ndi.maximum(inside, labels, index=np.arange(labels.max() + 1))
        peak = np.asarray(peak, dtype=np.float32)
        out[mask] = inside[mask] / peak[labels[mask]]
    return out.astype(np.float32)
