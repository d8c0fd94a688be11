"""Single cells from fields of view: nuclei, cells, and fixed-size single-cell crops (scikit-image).

The procedure follows the usual HPA recipe with classical image analysis instead of the HPA Cell Segmentator network:

1. nuclei: smooth the nucleus channel, Otsu threshold, fill holes, drop small objects, split touching nuclei with a
   watershed on the distance transform;
2. cells: the nuclei seed a watershed on the (inverted, smoothed) cytoplasm signal (microtubules + ER, each rescaled to
   [0, 1]), restricted to the cytoplasm foreground (a lowered Otsu threshold of that signal, plus the nuclei);
3. crops: a square window of ``crop_size`` pixels centred on each cell's bounding box (padded at the field border),
   optionally blanking pixels of other cells, resized to ``output_size`` (SubCell: 896 px crops downsampled to 448).

Axes are (row, col); all sizes are in pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from locscope.channels import ER, MICROTUBULES, NUCLEUS
from locscope.errors import InputError


@dataclass
class CellSegmentation:
    """Label images of one field: ``nuclei`` and ``cells`` are ``(H, W)`` int32, 0 = background; cell k contains
    nucleus k."""

    nuclei: np.ndarray
    cells: np.ndarray

    @property
    def n_cells(self) -> int:
        """Number of segmented cells."""
        return int(len(np.unique(self.cells[self.cells > 0])))


@dataclass
class CellCrop:
    """One single-cell crop.

    Attributes
    ----------
    label : int
        The cell's label in :attr:`CellSegmentation.cells`.
    bbox : tuple of int
        ``(min_row, min_col, max_row, max_col)`` of the cell in the field (max exclusive).
    centroid : tuple of float
        ``(row, col)`` of the cell mask's centroid in the field.
    images : dict
        Channel name -> ``(output_size, output_size)`` float32 crop.
    mask : numpy.ndarray
        ``(output_size, output_size)`` bool: the cell's own pixels.
    touches_border : bool
        True when the cell reaches the edge of the field (it may be cut off).
    """

    label: int
    bbox: tuple[int, int, int, int]
    centroid: tuple[float, float]
    images: dict[str, np.ndarray] = field(repr=False)
    mask: np.ndarray = field(repr=False)
    touches_border: bool = False


def rescale_intensity(image: np.ndarray, low_percentile: float = 0.5, high_percentile: float = 99.5) -> np.ndarray:
    """Rescale ``image`` ``(H, W)`` to [0, 1] between two percentiles (clipped); a constant image maps to zeros."""
    image = np.asarray(image, dtype=np.float32)
    if not np.all(np.isfinite(image)):
        raise InputError("image contains NaN or infinite values")
    low, high = np.percentile(image, [low_percentile, high_percentile])
    if high <= low:
        return np.zeros_like(image)
    return np.clip((image - low) / (high - low), 0.0, 1.0)


def _drop_small(labels: np.ndarray, min_area_px: int) -> np.ndarray:
    """Zero the objects of a label image smaller than ``min_area_px`` pixels."""
    from skimage import morphology

    return morphology.remove_small_objects(labels, max_size=min_area_px - 1)


def segment_nuclei(nucleus: np.ndarray, *, smoothing_sigma: float = 2.0, min_area_px: int = 200,
                   min_distance_px: int = 15) -> np.ndarray:
    """Label the nuclei of a field.

    Parameters
    ----------
    nucleus : numpy.ndarray
        ``(H, W)`` nucleus (DNA) channel, any intensity range.
    smoothing_sigma : float
        Gaussian smoothing before thresholding, in pixels.
    min_area_px : int
        Smaller objects are dropped.
    min_distance_px : int
        Minimal distance between two nucleus centres when splitting touching nuclei.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` int32 labels 1..n (0 = background).
    """
    from scipy import ndimage as ndi
    from skimage import feature, filters, measure, segmentation

    signal = filters.gaussian(rescale_intensity(nucleus), sigma=smoothing_sigma)
    if signal.max() <= signal.min():
        return np.zeros(signal.shape, dtype=np.int32)
    blobs = _drop_small(measure.label(ndi.binary_fill_holes(signal > filters.threshold_otsu(signal))), min_area_px)
    foreground = blobs > 0
    distance = ndi.distance_transform_edt(foreground)
    peaks = feature.peak_local_max(distance, min_distance=min_distance_px, labels=blobs, exclude_border=False)
    markers = np.zeros(signal.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = _drop_small(segmentation.watershed(-distance, markers, mask=foreground), min_area_px)
    return segmentation.relabel_sequential(labels)[0].astype(np.int32)


def segment_cells(nuclei: np.ndarray, cytoplasm: np.ndarray, *, smoothing_sigma: float = 4.0,
                  threshold_factor: float = 0.5) -> np.ndarray:
    """Grow cells from nuclei by a watershed on the cytoplasm signal.

    Parameters
    ----------
    nuclei : numpy.ndarray
        ``(H, W)`` int nucleus labels (the watershed seeds).
    cytoplasm : numpy.ndarray
        ``(H, W)`` cytoplasm signal (e.g. microtubules + ER rescaled to [0, 1]).
    smoothing_sigma : float
        Gaussian smoothing, in pixels.
    threshold_factor : float
        The foreground is ``signal > threshold_factor * otsu(signal)`` (cell edges are dim, so below Otsu).

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` int32 cell labels; cell k contains nucleus k.
    """
    from scipy import ndimage as ndi
    from skimage import filters, morphology, segmentation

    if nuclei.shape != cytoplasm.shape:
        raise InputError(f"nuclei {nuclei.shape} and cytoplasm {cytoplasm.shape} have different shapes")
    signal = filters.gaussian(np.asarray(cytoplasm, dtype=np.float32), sigma=smoothing_sigma)
    if signal.max() > signal.min():
        foreground = signal > threshold_factor * filters.threshold_otsu(signal)
    else:
        foreground = np.zeros(signal.shape, dtype=bool)
    # Close small gaps in the dim cell edges (edge-padded so that cells touching the field border keep their edge).
    closed = ndi.binary_closing(np.pad(foreground | (nuclei > 0), 3, mode="edge"), morphology.disk(3))[3:-3, 3:-3]
    foreground = ndi.binary_fill_holes(closed)
    return segmentation.watershed(-signal, nuclei, mask=foreground).astype(np.int32)


def segment_field(channels: Mapping[str, np.ndarray], *, smoothing_sigma: float = 2.0, min_nucleus_area_px: int = 200,
                  min_nucleus_distance_px: int = 15) -> CellSegmentation:
    """Segment nuclei and cells of a field of view from its landmark channels.

    Parameters
    ----------
    channels : mapping
        Canonical channel name -> ``(H, W)`` array; needs ``nucleus`` and uses ``microtubules`` and/or ``er`` for the
        cell bodies (without either, cells are the nuclei dilated by the watershed on the nucleus signal).
    smoothing_sigma, min_nucleus_area_px, min_nucleus_distance_px
        See :func:`segment_nuclei`.

    Returns
    -------
    CellSegmentation

    Examples
    --------
    >>> field = np.zeros((64, 64), np.float32); field[20:40, 20:40] = 1
    >>> seg = segment_field({"nucleus": field, "er": np.pad(np.ones((40, 40)), 12)}, min_nucleus_area_px=50)
    >>> seg.n_cells
    1
    """
    if NUCLEUS not in channels:
        raise InputError(f"segmentation needs a '{NUCLEUS}' channel; got {', '.join(channels) or 'none'}")
    nucleus = np.asarray(channels[NUCLEUS])
    if nucleus.ndim != 2:
        raise InputError(f"channel '{NUCLEUS}' must be a 2-D (H, W) image; got shape {nucleus.shape}")
    for name, image in channels.items():
        if np.shape(image) != nucleus.shape:
            raise InputError(f"channel '{name}' has shape {np.shape(image)}, expected {nucleus.shape}")
    nuclei = segment_nuclei(nucleus, smoothing_sigma=smoothing_sigma, min_area_px=min_nucleus_area_px,
                            min_distance_px=min_nucleus_distance_px)
    body = [rescale_intensity(channels[name]) for name in (MICROTUBULES, ER) if name in channels]
    cytoplasm = np.mean(body, axis=0) if body else rescale_intensity(nucleus)
    cells = segment_cells(nuclei, cytoplasm, smoothing_sigma=2 * smoothing_sigma)
    return CellSegmentation(nuclei=nuclei, cells=cells)


def crop_cells(channels: Mapping[str, np.ndarray], segmentation: CellSegmentation, *, crop_size: int = 512,
               output_size: int | None = None, mask_other_cells: bool = True,
               min_cell_area_px: int = 0) -> list[CellCrop]:
    """Cut one square crop per cell, centred on its bounding box.

    Parameters
    ----------
    channels : mapping
        Channel name -> ``(H, W)`` array of the field (all channels are cropped).
    segmentation : CellSegmentation
        From :func:`segment_field`.
    crop_size : int
        Side of the window cut from the field, in pixels (padded with each channel's minimum outside the field).
    output_size : int, optional
        Resize the crops to this side (anti-aliased); default: ``crop_size``.
    mask_other_cells : bool
        Set the pixels of other cells to the channel's minimum (background pixels are kept).
    min_cell_area_px : int
        Skip smaller cells.

    Returns
    -------
    list of CellCrop
        In label order.
    """
    from skimage import measure, transform

    if crop_size < 1:
        raise InputError(f"crop_size must be positive; got {crop_size}")
    output_size = output_size or crop_size
    cells = segmentation.cells
    half = crop_size // 2
    padded_cells = np.pad(cells, half + crop_size)
    # Outside the field and on other cells: each channel's minimum (its background level), not 0 (inputs may be in
    # [-1, 1] or carry a camera offset).
    fill = {name: float(np.min(image)) for name, image in channels.items()}
    padded = {name: np.pad(np.asarray(image, dtype=np.float32), half + crop_size, constant_values=fill[name])
              for name, image in channels.items()}
    crops = []
    for region in measure.regionprops(cells):
        if region.area < min_cell_area_px:
            continue
        min_row, min_col, max_row, max_col = region.bbox
        top = (min_row + max_row) // 2 - half + half + crop_size  # in padded coordinates
        left = (min_col + max_col) // 2 - half + half + crop_size
        window = (slice(top, top + crop_size), slice(left, left + crop_size))
        labels = padded_cells[window]
        keep = ~((labels > 0) & (labels != region.label)) if mask_other_cells else np.ones(labels.shape, bool)
        images = {name: np.where(keep, image[window], fill[name]).astype(np.float32) for name, image in padded.items()}
        mask = labels == region.label
        if output_size != crop_size:
            images = {name: transform.resize(im, (output_size, output_size), order=1, anti_aliasing=True,
                                             preserve_range=True).astype(np.float32) for name, im in images.items()}
            mask = transform.resize(mask.astype(np.float32), (output_size, output_size), order=0) > 0.5
        touches = min_row == 0 or min_col == 0 or max_row == cells.shape[0] or max_col == cells.shape[1]
        crops.append(CellCrop(label=int(region.label), bbox=tuple(int(v) for v in region.bbox),
                              centroid=tuple(float(v) for v in region.centroid), images=images, mask=mask,
                              touches_border=bool(touches)))
    return crops


__all__ = ["CellCrop", "CellSegmentation", "crop_cells", "rescale_intensity", "segment_cells", "segment_field",
           "segment_nuclei"]
