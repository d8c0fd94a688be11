"""``simulate_cell``: a rendered cell + a protein placed by the grammar (from a sequence) or by given compartments."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from locscope.channels import PROTEIN
from locscope.data import ontology
from locscope.errors import InputError
from locscope.synth.config import SimulatorConfig
from locscope.synth.grammar import grammar_targets, localize_sequence, random_protein
from locscope.synth.protein import normalize_fractions, place_protein
from locscope.synth.render import RenderedCell, render_cell


@dataclass
class SimulatedCell:
    """A simulated cell with its protein.

    Attributes
    ----------
    cell : RenderedCell
        Landmarks, masks, patterns, instances.
    protein : ndarray of float32, shape (H, W)
        The protein channel in [0, 1].
    compartments : dict of str to float
        Level-1 compartment -> fraction of the protein (sums to 1).
    labels : dict of str to list of str
        ``level1``, ``level2``, ``level3``, ``subcell`` labels of the compartments.
    sequence : str or None
    motifs : list of tuple (str, int, int)
        Motifs the grammar found in the sequence (empty when placed by compartments).
    provenance : dict
        What placed the protein: ``{"source": "grammar", "rule": ...}``, ``{"source": "compartments"}`` or an
        annotation record.
    """

    cell: RenderedCell
    protein: np.ndarray
    compartments: dict[str, float]
    labels: dict[str, list[str]]
    sequence: str | None
    motifs: list[tuple[str, int, int]]
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def images(self) -> dict[str, np.ndarray]:
        """All channels: ``protein`` + the landmarks (+ optional brightfield / Cell Painting)."""
        return {PROTEIN: self.protein, **self.cell.images}

    @property
    def masks(self) -> dict[str, np.ndarray]:
        return self.cell.masks

    def protein_mask(self) -> np.ndarray:
        """Union of the masks of the protein's compartments, bool ``(H, W)``."""
        return np.logical_or.reduce([self.cell.masks[c] for c in self.compartments])


def simulate_cell(cfg: SimulatorConfig, sequence: str | None = None, compartments: Mapping[str, float] | None = None,
                  seed: int = 0, *, split: str = "train", length: int = 200,
                  provenance: Mapping[str, Any] | None = None) -> SimulatedCell:
    """Simulate one image with a protein.

    Parameters
    ----------
    cfg : SimulatorConfig
    sequence : str, optional
        Place the protein where the motif grammar sends this sequence.
    compartments : dict of str to float, optional
        Place the protein with these fractions (label-faithful rendering); with ``sequence`` too, the sequence is
        kept as the item's sequence and ``compartments`` decide the image.
    seed : int
        The landmarks equal ``render_cell(cfg, seed)``; everything is bitwise reproducible for a seed.
    split : {'train', 'heldout', 'any'}
        Motif variant set when neither ``sequence`` nor ``compartments`` is given: then a grammar target is drawn at
        random and :func:`~locscope.synth.grammar.random_protein` writes its sequence.
    length : int
        Length of generated sequences.
    provenance : dict, optional
        Extra provenance (e.g. the annotation record of a real protein).

    Returns
    -------
    SimulatedCell

    Examples
    --------
    >>> sim = simulate_cell(SimulatorConfig(size=64), sequence="M" + "A" * 40 + "PKKKRKV" + "A" * 40, seed=3)
    >>> sim.compartments, sim.labels["level3"]
    ({'nucleoplasm': 1.0}, ['nucleus'])
    """
    cell = render_cell(cfg, seed=seed)
    rng_protein = np.random.default_rng([seed, 1])
    rng_sequence = np.random.default_rng([seed, 2])
    motifs: list[tuple[str, int, int]] = []
    if compartments is not None:
        fractions = normalize_fractions(cell, compartments)
        info: dict[str, Any] = {"source": "compartments"}
        if sequence is not None:
            motifs = localize_sequence(sequence).motifs
    else:
        if sequence is None:
            targets = grammar_targets()
            target = targets[int(rng_sequence.integers(len(targets)))]
            sequence, _ = random_protein(target, rng_sequence, length=length, split=split)  # type: ignore[arg-type]
        if not sequence:
            raise InputError("simulate_cell: empty sequence")
        call = localize_sequence(sequence)
        fractions, motifs = call.compartments, call.motifs
        info = {"source": "grammar", "rule": call.rule, "split": split}
    protein = place_protein(cell, fractions, rng=rng_protein)
    labels = ontology.hierarchy_labels(sorted(fractions, key=lambda c: -fractions[c]))
    return SimulatedCell(cell, protein, dict(fractions), labels, sequence, [tuple(m) for m in motifs],
                         {**info, **dict(provenance or {})})
