"""Landmark images prepared for a generative model: one :class:`LandmarkCell` per cell, read from any format locscope
reads, resized to the model's resolution; and the spatial inputs a latent diffusion model derives from it.

Shared by every family's generate / design / localize loop.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from locscope.data.transforms import resize_to_model, to_unit_range
from locscope.errors import ArgumentError

log = logging.getLogger(__name__)
MASKS_FILE = "compartment_masks.npz"
SMALL_LANDMARK_FACTOR = 4  # warn when a landmark image's side is at most 1/4 of the model input's


@dataclass
class LandmarkCell:
    """Landmarks prepared for a model.

    Attributes
    ----------
    images : np.ndarray
        ``(n_landmarks, S, S)`` float32 in [0, 1] at the model's resolution, in the model's landmark order.
    present : np.ndarray
        ``(n_landmarks,)`` bool; absent channels are filled by the model's learned placeholder.
    masks : dict of str to np.ndarray
        Simulator compartment masks ``(S, S)`` bool by level-1 name (empty for real images).
    source : str
    """

    images: np.ndarray
    present: np.ndarray
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = ""


def read_landmarks(paths: Sequence[str | Path], channels: Sequence[str], size: int,
                   model_pixel_size_nm: float | None = None) -> LandmarkCell:
    """Read landmark files (any reader format) into a :class:`LandmarkCell` for a model.

    A ``compartment_masks.npz`` beside the files (written with the bundled simulator examples) supplies the
    simulator's compartment masks.

    Raises
    ------
    InputError
        If no file holds any of the model's landmark channels.
    """
    from locscope.io import read_images

    if not paths:
        raise ArgumentError("landmarks", ": give at least one landmark image (nucleus, er, microtubules)")
    records = read_images([Path(p) for p in paths])
    found: dict[str, np.ndarray] = {}
    pixel_size = None
    for record in records:
        for name, image in record.channels.items():
            if name in channels and name not in found:
                found[name] = image
                pixel_size = pixel_size or record.pixel_size_nm
    if not found:
        names = ", ".join(sorted({n for r in records for n in r.channels}))
        raise ArgumentError("landmarks", f"{paths[0]}: none of the model's landmark channels "
                                         f"({', '.join(channels)}) found; the files hold: {names or 'nothing'}")
    if len(records) > 1 and len(found) < len(records):
        log.warning("--landmarks: %d records read; using the first image of each landmark channel", len(records))
    shapes = {image.shape for image in found.values()}
    if len(shapes) > 1:
        raise ArgumentError("landmarks", f": landmark images differ in shape {sorted(shapes)}")
    height, width = next(iter(shapes))
    if min(height, width) * SMALL_LANDMARK_FACTOR <= size:
        log.warning("--landmarks: %d x %d images are far smaller than the model's %d x %d input; they are upsampled "
                    "%.0fx and carry little structure", height, width, size, size, size / min(height, width))
    if pixel_size and model_pixel_size_nm:
        scaled = pixel_size * next(iter(shapes))[0] / size
        if abs(scaled - model_pixel_size_nm) / model_pixel_size_nm > 0.25:
            log.warning("landmarks: %.0f nm per model pixel after resizing vs %.0f nm in the model's training data",
                        scaled, model_pixel_size_nm)
    images = np.zeros((len(channels), size, size), np.float32)
    present = np.zeros(len(channels), bool)
    for i, name in enumerate(channels):
        if name in found:
            images[i] = resize_to_model(to_unit_range(found[name]), size)
            present[i] = True
    masks: dict[str, np.ndarray] = {}
    mask_file = Path(paths[0]).parent / MASKS_FILE if Path(paths[0]).is_file() else Path(paths[0]) / MASKS_FILE
    if mask_file.is_file():
        with np.load(mask_file, allow_pickle=False) as data:
            masks = {name: resize_to_model(data[name], size) >= 0.5 for name in data.files}
    return LandmarkCell(images, present, masks, source=", ".join(str(p) for p in paths))


def latent_conditions(cell: "LandmarkCell", paths: Sequence[str | Path]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A latent diffusion model's spatial inputs from a cell read with channels ``(nucleus, *landmark_channels)``:
    the nuclear distance map ``(1, 1, S, S)`` (nuclei segmented in the nucleus image) and the other landmarks
    ``(1, n, S, S)`` in [-1, 1] (None without any).

    Raises
    ------
    InputError
        If the landmarks hold no nucleus image (the model is conditioned on its distance map).
    """
    from locscope.data.transforms import nuclear_distance_map, segment_nuclei

    if not cell.present[0]:
        raise ArgumentError("landmarks", f"{paths[0]}: no nucleus image; a latent diffusion model is conditioned on "
                            "the nuclear distance map, so the nucleus is required (ER and microtubules are optional)")
    distance = torch.from_numpy(nuclear_distance_map(segment_nuclei(cell.images[0])))[None, None]
    others = torch.from_numpy(cell.images[1:] * 2 - 1)[None] if len(cell.images) > 1 else None
    return distance, others
