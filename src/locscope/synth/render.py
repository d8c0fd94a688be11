"""``render_cell``: lay out cells, build every compartment, stain the landmarks and image them through the optics."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from locscope.channels import ER, MICROTUBULES, NUCLEUS
from locscope.synth.cellpainting import brightfield_image, cell_painting_stains
from locscope.synth.compartments import COMPARTMENTS, build_compartments, make_frame
from locscope.synth.config import PERTURBATIONS, SimulatorConfig
from locscope.synth.geometry import bounding_window, instance_map, layout_cells
from locscope.synth.landmarks import er_stain, microtubule_stain, nucleus_stain
from locscope.synth.optics import apply_optics, illumination_field


@dataclass
class RenderedCell:
    """A simulated image of one cell (crop) or several cells (field), without the protein.

    Attributes
    ----------
    images : dict of str to ndarray
        Channel name -> float32 ``(H, W)`` in [0, 1] (landmarks, optional brightfield / Cell Painting).
    masks : dict of str to ndarray
        Compartment (level-1 name) -> bool ``(H, W)``, exact ground truth (union over the cells of a field).
    patterns : dict of str to ndarray
        Compartment -> float32 ``(H, W)``: how a protein living there looks before optics; within each cell the pattern
        sums to 1, so a protein's fractions are fractions of its total amount.
    instances : ndarray of int32, shape (H, W)
        0 = background, k = cell k (1-based).
    nuclei : ndarray of int32, shape (H, W)
        The nucleus of cell k labelled k.
    expression : ndarray, shape (n_cells,)
        Per-cell protein expression factors (max 1).
    illumination : ndarray of float32, shape (H, W)
        The illumination field used for every channel (the protein channel reuses it).
    pixel_size_nm : float
    perturbation : str
        The Cell Painting perturbation class of this image (``'control'`` when none).
    config : SimulatorConfig
    seed : int or None
    """

    images: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]
    patterns: dict[str, np.ndarray]
    instances: np.ndarray
    nuclei: np.ndarray
    expression: np.ndarray
    illumination: np.ndarray
    pixel_size_nm: float
    perturbation: str
    config: SimulatorConfig
    seed: int | None = None
    meta: dict = field(default_factory=dict)

    @property
    def n_cells(self) -> int:
        return int(len(self.expression))


def _perturbation(cfg: SimulatorConfig, rng: np.random.Generator) -> str:
    if cfg.perturbation is None:
        return "control"
    if cfg.perturbation == "random":
        return str(PERTURBATIONS[int(rng.integers(len(PERTURBATIONS)))])
    return cfg.perturbation


def render_cell(cfg: SimulatorConfig, seed: int | None = 0, *, rng: np.random.Generator | None = None) -> RenderedCell:
    """Render landmarks and compartment masks of a crop (one cell) or a field (several cells).

    Parameters
    ----------
    cfg : SimulatorConfig
        Image size, mode, pixel size, channels, optics.
    seed : int, optional
        The image is bitwise identical for the same ``seed`` and ``cfg``.
    rng : numpy.random.Generator, optional
        Use this generator instead of ``seed``.

    Returns
    -------
    RenderedCell
        ``images`` (float32 in [0, 1]), ``masks`` (bool, one per compartment of
        :data:`locscope.synth.compartments.COMPARTMENTS`), ``patterns``, ``instances``.

    Examples
    --------
    >>> cell = render_cell(SimulatorConfig(size=64), seed=3)
    >>> cell.images["nucleus"].shape, cell.masks["mitochondria"].dtype
    ((64, 64), dtype('bool'))
    """
    rng = np.random.default_rng(seed) if rng is None else rng
    size = cfg.size
    shape = (size, size)
    perturbation = _perturbation(cfg, rng)
    px_per_um = 1000.0 / cfg.resolved_pixel_size_nm
    shapes = layout_cells(cfg, rng, radius_scale=1.4 if perturbation == "enlarged-cells" else 1.0,
                          nucleus_ratio=0.3 if perturbation == "condensed-nuclei" else 0.42)
    cells, nuclei = instance_map(shapes, shape)

    masks = {name: np.zeros(shape, dtype=bool) for name in COMPARTMENTS}
    patterns = {name: np.zeros(shape, dtype=np.float32) for name in COMPARTMENTS}
    stains: dict[str, np.ndarray] = {}
    thickness = np.zeros(shape, dtype=np.float32)
    brightness = np.exp(rng.normal(0.0, cfg.intensity_variation, size=len(shapes)))
    brightness = 0.85 * brightness / brightness.max()
    expression = np.exp(rng.normal(0.0, cfg.intensity_variation, size=len(shapes)))
    expression = expression / expression.max()
    for k, s in enumerate(shapes):
        territory = cells == k + 1
        window = bounding_window(territory, margin=1)
        if window is None:  # a cell entirely covered by its neighbours
            continue
        origin = np.array([window[0].start, window[1].start], dtype=np.float64)
        frame = make_frame(territory[window], nuclei[window] == k + 1, s.centrosome - origin, s.cell.centre - origin,
                           s.cell.radius, s.nucleus.radius, px_per_um, long_axis=-s.cell.phases[1] / 2.0)
        comps = build_compartments(frame, rng, perturbation)
        for name, (mask, pattern) in comps.items():
            masks[name][window] |= mask
            total = float(pattern.sum())
            if total > 0:
                patterns[name][window] += pattern / total
        cell_stains = {
            NUCLEUS: nucleus_stain(frame, comps, rng, condensed=perturbation == "condensed-nuclei"),
            ER: er_stain(frame, comps, rng),
            MICROTUBULES: microtubule_stain(frame, comps, rng),
        }
        if cfg.cell_painting:
            cell_stains.update(cell_painting_stains(frame, comps, cell_stains, rng))
        for channel, stain in cell_stains.items():
            peak = float(stain.max())
            if channel not in stains:
                stains[channel] = np.zeros(shape, dtype=np.float32)
            if peak > 0:
                stains[channel][window] += np.where(frame.cell, stain / peak * brightness[k], 0.0).astype(np.float32)
        thickness[window] += np.where(frame.cell, np.sqrt(frame.cell_depth / max(frame.cell_radius, 1.0)), 0.0) \
            + 0.3 * frame.nucleus + 0.3 * comps["nucleoli"][0] + 0.2 * comps["lipid-droplets"][0]

    illumination = illumination_field(cfg, rng)
    images: dict[str, np.ndarray] = {}
    for channel in cfg.channels:
        if channel == "brightfield":
            clean = brightfield_image(thickness, cfg, rng)
            images[channel] = apply_optics(clean, cfg, rng, None) if cfg.optics else clean
            continue
        clean = stains[channel]
        images[channel] = apply_optics(clean, cfg, rng, illumination) if cfg.optics else np.clip(clean, 0, 1)
    return RenderedCell(images=images, masks=masks, patterns=patterns, instances=cells, nuclei=nuclei,
                        expression=expression, illumination=illumination, pixel_size_nm=cfg.resolved_pixel_size_nm,
                        perturbation=perturbation, config=cfg, seed=seed)
