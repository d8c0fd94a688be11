"""Landmark stains as HPA images them, built from a cell's compartments (clean intensities, before optics).

- ``nucleus`` (DAPI/Hoechst): chromatin texture with brighter heterochromatin foci, dim nucleoli, a slightly brighter
  periphery;
- ``er`` (calreticulin-like): the reticular network, denser near the nucleus, plus the nuclear envelope that is
  continuous with it;
- ``microtubules`` (tubulin): the filaments radiating from the centrosome, a bright centrosome and a faint diffuse
  pool of free tubulin.
"""

from __future__ import annotations

import numpy as np

from locscope.synth.compartments import CellFrame
from locscope.synth.draw import smooth_noise

Compartments = dict[str, tuple[np.ndarray, np.ndarray]]


def nucleus_stain(frame: CellFrame, comps: Compartments, rng: np.random.Generator, condensed: bool = False) -> np.ndarray:
    """DNA stain of one cell, float32 window-shaped, peak about 1 (``condensed``: uniformly bright, little texture)."""
    nuc = frame.nucleus
    coarse = smooth_noise(rng, frame.shape, max(frame.um(0.8), 0.7))
    fine = smooth_noise(rng, frame.shape, max(frame.um(0.15), 0.5))
    texture = 0.7 + 0.12 * coarse + 0.18 * np.clip(fine, -1, None)
    if condensed:
        texture = 0.95 + 0.05 * fine
    edge = np.exp(-frame.nucleus_depth / max(frame.um(1.0), 1.0))  # chromatin is denser under the lamina
    img = nuc * (texture + 0.1 * edge)
    img = np.where(comps["nucleoli"][0], img * 0.45, img)
    return np.clip(img, 0.0, None).astype(np.float32)


def er_stain(frame: CellFrame, comps: Compartments, rng: np.random.Generator) -> np.ndarray:
    """ER stain of one cell: network pattern + nuclear envelope + a faint diffuse lumen signal."""
    net = comps["endoplasmic-reticulum"][1]
    envelope = comps["nuclear-membrane"][0] * 0.5
    diffuse = 0.12 * frame.cytoplasm * np.exp(-frame.radial / 0.5)
    # ER sheets above and below the nucleus show faintly through it in a 2-D image
    over_nucleus = 0.2 * frame.nucleus * smooth_noise(rng, frame.shape, max(frame.um(0.2), 0.75)).clip(0, None)
    return (net + envelope + diffuse + over_nucleus).astype(np.float32)


def microtubule_stain(frame: CellFrame, comps: Compartments, rng: np.random.Generator) -> np.ndarray:
    """Tubulin stain of one cell: filaments + centrosome + free tubulin."""
    filaments = comps["microtubules"][1]
    centrosome = comps["centrosome"][1] * 1.2
    free = 0.1 * frame.cytoplasm + 0.04 * frame.nucleus
    return np.maximum(filaments, centrosome).astype(np.float32) + free.astype(np.float32)
