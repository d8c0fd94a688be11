"""``simulate_store``: write simulated cells to a locscope dataset store (:mod:`locscope.data.store`).

Three sources of proteins:

- ``sequences=None``: synthetic proteins written by the motif grammar (:func:`~locscope.synth.grammar.random_protein`)
  for targets drawn uniformly from :func:`~locscope.synth.grammar.grammar_targets`. Splits are chosen per protein
  here: ``train`` proteins carry *train* motif variants, ``val`` / ``test`` proteins carry *held-out* variants, so
  validation and test measure generalisation to unseen motif strings.
- real proteins with annotations (:class:`~locscope.synth.labelled.AnnotatedProtein`, e.g. from ``opencell_raw.csv``):
  label-faithful cells, the protein where the annotation says; splits by protein (drawn by the store).
- plain sequences (``(id, sequence)`` pairs or :class:`~locscope.io.sequences.SequenceRecord`): placed by the grammar.

Images are stored as ``uint16`` (value / 65535 = intensity in [0, 1]; ``attrs["intensity_max"]``) unless
``image_dtype='float32'``. Every item carries all compartment masks, its labels (level1/2/3 + SubCell), the
sequence, the provenance (grammar rule and motifs, or the annotation) and the store holds the generator settings.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from locscope import __version__
from locscope.data.splits import SPLIT_NAMES
from locscope.data.store import Store, check_store_target, write_store
from locscope.errors import InputError
from locscope.synth.compartments import COMPARTMENTS
from locscope.synth.config import SimulatorConfig
from locscope.synth.grammar import grammar_targets, random_protein
from locscope.synth.labelled import AnnotatedProtein
from locscope.synth.simulate import SimulatedCell, simulate_cell

INTENSITY_MAX = 65535


def _to_dtype(image: np.ndarray, image_dtype: str) -> np.ndarray:
    if image_dtype == "float32":
        return image.astype(np.float32)
    if image_dtype == "uint16":
        return np.rint(np.clip(image, 0.0, 1.0) * INTENSITY_MAX).astype(np.uint16)
    raise InputError(f"image_dtype={image_dtype!r}: accepted values are 'uint16', 'float32'")


def cell_item(sim: SimulatedCell, item_id: str, protein_id: str, image_dtype: str = "uint16",
              split: str | None = None, mask_names: Sequence[str] = COMPARTMENTS) -> dict[str, Any]:
    """One store item (the dict of the store contract) from a simulated cell, with the masks ``mask_names``."""
    provenance = {**sim.provenance, "compartments": sim.compartments, "motifs": [list(m) for m in sim.motifs],
                  "seed": sim.cell.seed, "perturbation": sim.cell.perturbation, "n_cells": sim.cell.n_cells}
    item = {
        "id": item_id, "protein_id": protein_id, "sequence": sim.sequence or "",
        "images": {name: _to_dtype(img, image_dtype) for name, img in sim.images.items()},
        "masks": {name: sim.cell.masks[name] for name in mask_names}, "labels": sim.labels, "provenance": provenance,
    }
    if split is not None:
        item["split"] = split
    return item


def _proteins(sequences: Any) -> list[tuple[str, str, dict[str, float] | None, dict]]:
    """Normalise the ``sequences`` argument to ``(protein_id, sequence, compartments or None, provenance)``."""
    if isinstance(sequences, (str, os.PathLike)):
        from locscope.synth.labelled import read_annotated_proteins

        path = Path(sequences)
        with open(path, encoding="utf-8", errors="replace") as handle:
            header = handle.readline()
        if "level1" in header:
            sequences = read_annotated_proteins(path)
        else:
            from locscope.io.sequences import read_sequences

            sequences = read_sequences(path, max_length=None)
    out = []
    for k, entry in enumerate(sequences):
        if isinstance(entry, AnnotatedProtein):
            out.append((entry.id, entry.sequence, entry.compartments,
                        {"source": "annotation", "annotation": entry.source, "name": entry.name,
                         "annotated_level1": entry.level1}))
        elif hasattr(entry, "sequence") and hasattr(entry, "id"):
            out.append((str(entry.id), str(entry.sequence), None, {}))
        elif isinstance(entry, (tuple, list)) and len(entry) == 2:
            out.append((str(entry[0]), str(entry[1]), None, {}))
        else:
            raise InputError(f"sequences: entry {k} is not an (id, sequence) pair, a SequenceRecord or an "
                             "AnnotatedProtein")
    if not out:
        raise InputError("sequences: no proteins given")
    return out


def _make_item(i: int, n_proteins: int, cfg: SimulatorConfig, proteins: list | None, seed: int, image_dtype: str,
               cells_per_protein: int, fractions: np.ndarray, length: int,
               mask_names: Sequence[str] = COMPARTMENTS) -> dict[str, Any]:
    """Item ``i`` of a simulated store; depends only on its arguments (so workers can build items in any order)."""
    item_seed = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
    p = i // max(cells_per_protein, 1)
    if proteins is None:
        # the same protein for all its cells: its sequence and split follow from the protein seed
        protein_seed = int(np.random.SeedSequence([seed, p, 7]).generate_state(1)[0])
        rng = np.random.default_rng(protein_seed)
        split = SPLIT_NAMES[int(rng.choice(3, p=fractions / fractions.sum()))]
        motif_split = "train" if split == "train" else "heldout"
        targets = grammar_targets()
        target = targets[int(rng.integers(len(targets)))]
        sequence, _ = random_protein(target, rng, length=length, split=motif_split)  # type: ignore[arg-type]
        sim = simulate_cell(cfg, sequence=sequence, seed=item_seed, provenance={"motif_split": motif_split})
        return cell_item(sim, f"sim-{seed}-{i:07d}", f"synth-{seed}-{p:07d}", image_dtype, split, mask_names)
    protein_id, sequence, compartments, provenance = proteins[p % n_proteins]
    sim = simulate_cell(cfg, sequence=sequence, compartments=compartments, seed=item_seed, provenance=provenance)
    return cell_item(sim, f"{protein_id}-{i:07d}", protein_id, image_dtype, None, mask_names)


def _make_item_star(args: tuple) -> dict[str, Any]:
    return _make_item(*args)


def simulate_items(n: int, cfg: SimulatorConfig, sequences: Any = None, seed: int = 0, *, image_dtype: str = "uint16",
                   cells_per_protein: int = 1, split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
                   length: int = 200, workers: int = 1,
                   mask_names: Sequence[str] = COMPARTMENTS) -> Iterator[dict[str, Any]]:
    """Yield ``n`` store items in order (see :func:`simulate_store`); item ``i`` depends only on ``(seed, i)``, so
    ``workers > 1`` processes give bitwise the same items."""
    proteins = _proteins(sequences) if sequences is not None else None
    fractions = np.asarray(split_fractions, dtype=np.float64)
    args = ((i, len(proteins or ()), cfg, proteins, seed, image_dtype, cells_per_protein, fractions, length,
             tuple(mask_names)) for i in range(n))
    if workers <= 1:
        for a in args:
            yield _make_item(*a)
        return
    import multiprocessing

    with multiprocessing.get_context("spawn" if os.name == "nt" else "fork").Pool(workers) as pool:
        yield from pool.imap(_make_item_star, args, chunksize=4)


def simulate_store(path: str | os.PathLike, n: int, cfg: SimulatorConfig, sequences: Any = None, seed: int = 0, *,
                   image_dtype: str = "uint16", cells_per_protein: int = 1,
                   split_fractions: Sequence[float] = (0.8, 0.1, 0.1), length: int = 200, workers: int = 1,
                   mask_names: Sequence[str] = COMPARTMENTS, progress: bool = True, overwrite: bool = False) -> Store:
    """Simulate ``n`` cells into a store at ``path`` (atomic; an interrupted build resumes).

    Parameters
    ----------
    path : path-like
        Store directory.
    n : int
        Number of items (images).
    cfg : SimulatorConfig
    sequences : None, path, or sequence of proteins
        ``None``: grammar proteins; a path to a level table with sequences (``opencell_raw.csv``: label-faithful) or a
        FASTA / CSV of sequences (grammar-placed); or a list of ``AnnotatedProtein`` / ``SequenceRecord`` /
        ``(id, sequence)``. Proteins are used in order, ``cells_per_protein`` cells each, cycling.
    seed : int
        Everything (cells, proteins, splits) is reproducible for a seed.
    image_dtype : {'uint16', 'float32'}
    cells_per_protein : int
        Consecutive items sharing one protein (different cells).
    split_fractions : (3,) floats
        Train / val / test fractions (by protein).
    length : int
        Length of grammar proteins.
    workers : int
        Processes simulating in parallel (the output does not depend on it).
    mask_names : sequence of str
        Compartment masks to store (default all of :data:`~locscope.synth.compartments.COMPARTMENTS`; each mask is
        one more chunk write per item, so a training store may keep only the ones it scores).
    progress : bool
    overwrite : bool
        Replace a complete store at ``path`` (:func:`locscope.data.store.write_store`).

    Returns
    -------
    Store
    """
    if n < 1:
        raise InputError(f"simulate_store: n={n}; expected at least 1 item")
    unknown = [m for m in mask_names if m not in COMPARTMENTS]
    if unknown:
        raise InputError(f"simulate_store: unknown mask(s) {unknown}; known: {', '.join(COMPARTMENTS)}")
    check_store_target(path, overwrite)  # before any worker starts
    channels = ("protein",) + cfg.channels
    attrs = {
        "generator": "locscope.synth", "locscope_version": __version__, "simulator": cfg.to_dict(),
        "pixel_size_nm": cfg.resolved_pixel_size_nm, "seed": seed, "image_dtype": image_dtype,
        "intensity_max": INTENSITY_MAX if image_dtype == "uint16" else 1.0, "cells_per_protein": cells_per_protein,
        "sequences": str(sequences) if isinstance(sequences, (str, os.PathLike)) else
        ("grammar" if sequences is None else f"{len(sequences)} given proteins"),
    }
    items = simulate_items(n, cfg, sequences, seed, image_dtype=image_dtype, cells_per_protein=cells_per_protein,
                           split_fractions=split_fractions, length=length, workers=workers, mask_names=mask_names)
    return write_store(path, items, channels=channels, image_shape=(cfg.size, cfg.size), image_dtype=image_dtype,
                       mask_names=tuple(mask_names), attrs=attrs, n_items=n, split_fractions=split_fractions, seed=seed,
                       progress=progress, overwrite=overwrite)
