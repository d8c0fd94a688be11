"""Brightfield and 5-channel Cell Painting stains for the virtual-staining task.

Cell Painting channels (Bray et al. 2016): ``dna`` (Hoechst), ``rna`` (SYTO 14: nucleoli + cytoplasmic RNA), ``er``
(concanavalin A), ``agp`` (phalloidin + wheat-germ agglutinin: actin, Golgi, plasma membrane), ``mito`` (MitoTracker).

Perturbation classes change the phenotype in known ways (see :data:`locscope.synth.config.PERTURBATIONS`):
``fragmented-mitochondria`` (many short fragments instead of tubules), ``condensed-nuclei`` (small, bright, smooth
nuclei), ``enlarged-cells`` (1.4x larger cells), ``disrupted-microtubules`` (short scattered fragments, no aster; Golgi
mini-stacks scattered through the cytoplasm, ER retracted towards the nucleus);
``control`` is unperturbed. Geometry and structure changes are made in :mod:`locscope.synth.render` /
:mod:`locscope.synth.compartments`; this module turns the compartments into stains.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from locscope.synth.compartments import CellFrame
from locscope.synth.config import SimulatorConfig
from locscope.synth.draw import smooth_noise

Compartments = dict[str, tuple[np.ndarray, np.ndarray]]


def cell_painting_stains(frame: CellFrame, comps: Compartments, landmarks: dict[str, np.ndarray],
                         rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The five Cell Painting stains of one cell (window-shaped float32, before optics)."""
    pattern = {name: p for name, (_, p) in comps.items()}
    rna = (1.0 * pattern["nucleoli"] / max(float(pattern["nucleoli"].max()), 1e-6)
           + 0.35 * frame.cytoplasm * np.exp(-frame.radial / 0.6) + 0.15 * comps["nucleoplasm"][0])
    agp = (pattern["actin-filaments"] + 0.8 * comps["golgi-apparatus"][0] + 0.6 * comps["plasma-membrane"][0]
           + 0.05 * frame.cell)
    return {
        "dna": landmarks["nucleus"],
        "rna": rna.astype(np.float32),
        "agp": agp.astype(np.float32),
        "mito": (pattern["mitochondria"] + 0.03 * frame.cytoplasm).astype(np.float32),
    }


def brightfield_image(thickness: np.ndarray, cfg: SimulatorConfig, rng: np.random.Generator) -> np.ndarray:
    """Slightly defocused brightfield from an optical-thickness map ``(H, W)``: grey background, dark-bright cell edges
    (the Laplacian of the blurred thickness) and granular texture; float32 in [0, 1]."""
    sigma = max(1.0, 600.0 / cfg.resolved_pixel_size_nm)
    smooth = ndimage.gaussian_filter(thickness, sigma)
    edges = ndimage.laplace(smooth)
    grain = smooth_noise(rng, thickness.shape, max(0.6, 300.0 / cfg.resolved_pixel_size_nm)) * (thickness > 0)
    img = 0.55 - 0.12 * smooth + 2.5 * sigma * edges + 0.03 * grain
    return np.clip(img, 0.0, 1.0).astype(np.float32)
