"""The ground-truth virtual-cell simulator.

Realistic cell images (landmarks as HPA images them, optional brightfield and Cell Painting) with an exact mask for
every level-1 compartment, and a protein channel placed either by a motif grammar read from the sequence
(:mod:`locscope.synth.grammar`) or by real annotations (:mod:`locscope.synth.labelled`).

>>> from locscope.synth import SimulatorConfig, render_cell, place_protein, simulate_cell
>>> cell = render_cell(SimulatorConfig(size=64), seed=3)
>>> protein = place_protein(cell, {"nucleoplasm": 0.7, "cytosol": 0.3}, seed=3)
"""

from locscope.synth.compartments import COMPARTMENTS
from locscope.synth.config import PERTURBATIONS, SimulatorConfig
from locscope.synth.protein import place_protein, protein_components
from locscope.synth.render import RenderedCell, render_cell
from locscope.synth.simulate import SimulatedCell, simulate_cell
from locscope.synth.store import simulate_store

__all__ = [
    "COMPARTMENTS", "PERTURBATIONS", "RenderedCell", "SimulatedCell", "SimulatorConfig", "place_protein",
    "protein_components", "render_cell", "simulate_cell",
    "simulate_store",
]
