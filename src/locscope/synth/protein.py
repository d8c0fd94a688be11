"""``place_protein``: put a protein into a rendered cell's compartments with given fractions of its total amount."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from locscope.errors import InputError
from locscope.synth.optics import apply_optics
from locscope.synth.render import RenderedCell

PEAK = 0.9  # the brightest protein pixel before noise (leaves head-room for shot noise)


def normalize_fractions(cell: RenderedCell, compartments: Mapping[str, float]) -> dict[str, float]:
    """Validate compartment names and fractions and rescale the fractions to sum to 1.

    Raises
    ------
    InputError
        For an unknown compartment, a negative fraction or fractions summing to 0.
    """
    unknown = [name for name in compartments if name not in cell.patterns]
    if unknown:
        raise InputError(f"place_protein: unknown compartment(s) {unknown}; known: {', '.join(cell.patterns)}")
    negative = {k: v for k, v in compartments.items() if not v >= 0}
    if negative:
        raise InputError(f"place_protein: fractions must be >= 0, got {negative}")
    total = float(sum(compartments.values()))
    if total <= 0:
        raise InputError("place_protein: the fractions sum to 0; give at least one compartment a positive fraction")
    return {k: float(v) / total for k, v in compartments.items() if v > 0}


def protein_components(cell: RenderedCell, compartments: Mapping[str, float]) -> dict[str, np.ndarray]:
    """Clean protein amount per compartment, float32 ``(H, W)`` each.

    Within every cell, component ``c`` sums to ``fraction_c * expression_k``: the fractions are fractions of the
    protein's total amount in that cell (so they add up exactly), and ``expression_k`` is the cell's expression level.
    """
    fractions = normalize_fractions(cell, compartments)
    expression_map = np.concatenate([[0.0], cell.expression]).astype(np.float32)[cell.instances]
    return {name: (f * cell.patterns[name] * expression_map).astype(np.float32) for name, f in fractions.items()}


def place_protein(cell: RenderedCell, compartments: Mapping[str, float], seed: int | None = 0, *,
                  rng: np.random.Generator | None = None, optics: bool | None = None) -> np.ndarray:
    """Render the protein channel of ``cell`` with the protein split over ``compartments``.

    Parameters
    ----------
    cell : RenderedCell
        From :func:`locscope.synth.render_cell`.
    compartments : dict of str to float
        Level-1 compartment -> fraction of the protein's amount (rescaled to sum to 1), e.g.
        ``{"nucleoplasm": 0.7, "cytosol": 0.3}``.
    seed : int, optional
        Seed of the protein channel's noise.
    rng : numpy.random.Generator, optional
        Use this generator instead of ``seed``.
    optics : bool, optional
        Blur, illumination (the cell's field), background and noise; default ``cell.config.optics``.

    Returns
    -------
    ndarray of float32, shape (H, W)
        In [0, 1]; the clean image (``optics=False``) peaks at 0.9.

    Examples
    --------
    >>> from locscope.synth import SimulatorConfig, render_cell
    >>> cell = render_cell(SimulatorConfig(size=64), seed=3)
    >>> image = place_protein(cell, {"nucleoplasm": 0.7, "cytosol": 0.3}, seed=3)
    >>> image.shape, image.dtype
    ((64, 64), dtype('float32'))
    """
    rng = np.random.default_rng(seed) if rng is None else rng
    clean = np.sum(list(protein_components(cell, compartments).values()), axis=0).astype(np.float32)
    peak = float(clean.max())
    if peak > 0:
        clean *= PEAK / peak
    use_optics = cell.config.optics if optics is None else optics
    if not use_optics:
        return clean
    return apply_optics(clean, cell.config, rng, cell.illumination)
