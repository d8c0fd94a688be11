"""``locscope simulate``: simulated cells with exact ground truth written to a dataset store.

Checks the options, builds the :class:`~locscope.synth.SimulatorConfig` and runs
:func:`locscope.synth.simulate_store` (atomic; an interrupted build resumes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Sequence

from locscope.data.store import Store
from locscope.errors import ArgumentError
from locscope import synth
from locscope.synth import COMPARTMENTS, SimulatorConfig


def mask_names_of(masks: str | Sequence[str]) -> tuple[str, ...]:
    """The compartment masks a ``masks`` argument names: ``'all'``, ``'none'``, a comma list or a sequence of names.

    Raises
    ------
    ArgumentError
        For a name that is not a simulator compartment (listing them).
    """
    if isinstance(masks, str):
        names = COMPARTMENTS if masks == "all" else () if masks == "none" else \
            tuple(m.strip() for m in masks.split(",") if m.strip())
    else:
        names = tuple(masks)
    unknown = [m for m in names if m not in COMPARTMENTS]
    if unknown:
        raise ArgumentError("masks", f": unknown compartment(s) {', '.join(unknown)}; known: {', '.join(COMPARTMENTS)}")
    return tuple(names)


def simulate(out: str | Path, n: int = 1000, *, size: int = 128, sequences: str | Path | None = None, seed: int = 0,
             mode: Literal["crop", "field"] = "crop", neighbours: bool = False, cell_painting: bool = False,
             brightfield: bool = False, perturbation: str | None = None, pixel_size_nm: float | None = None,
             cells_per_protein: int = 1, optics: bool = True, image_dtype: str = "uint16", workers: int | None = None,
             masks: str | Sequence[str] = "all", overwrite: bool = False) -> Store:
    """Simulate ``n`` cells (landmarks + protein + a mask per compartment + labels + provenance) into a store.

    Parameters
    ----------
    out : path
        Store directory (new or empty; an interrupted build of the same store resumes).
    n : int
        Number of images (>= 1).
    size : int
        Image side in pixels.
    sequences : path, optional
        A level table with sequences (label-faithful cells) or a FASTA / CSV of sequences (placed by the motif
        grammar); default: grammar-written proteins.
    seed : int
        Everything (cells, proteins, splits) is reproducible for a seed.
    mode : {'crop', 'field'}
        One cell per image, or several touching cells cut by the border.
    neighbours, cell_painting, brightfield : bool
        Crop mode: neighbouring cells cut by the border; also render dna / rna / er / agp / mito; also brightfield.
    perturbation : str, optional
        Cell Painting phenotype (``'random'``, ``'control'``, ...).
    pixel_size_nm : float, optional
        Pixel size in nm (default: a cell fills 80% of a crop).
    cells_per_protein : int
        Images per protein (different cells).
    optics : bool
        Blur, illumination and noise (False: clean images).
    image_dtype : {'uint16', 'float32'}
    workers : int, optional
        Parallel processes (default: the available cores, at most ``n``; the output does not depend on it).
    masks : str or sequence of str
        Compartment masks to store: ``'all'``, ``'none'``, a comma list or names (fewer masks write faster).
    overwrite : bool
        Replace an earlier store of ``simulate`` at ``out``.

    Returns
    -------
    Store

    Raises
    ------
    ArgumentError
        For ``n`` or ``workers`` below 1, an unknown ``mode`` or mask name, a ``sequences`` file that does not exist.
    """
    if n < 1:
        raise ArgumentError("n", f"{n}: expected at least 1")
    if workers is not None and workers < 1:
        raise ArgumentError("workers", f"{workers}: expected at least 1")
    if workers is None:
        from locscope.utils.cpu import available_cores

        workers = min(available_cores(), n)
    if mode not in ("crop", "field"):
        raise ArgumentError("mode", f"{mode!r}: accepted values are crop, field")
    if sequences is not None and not Path(sequences).is_file():
        raise ArgumentError("sequences", f"{sequences}: file not found")
    cfg = SimulatorConfig(size=size, mode=mode, pixel_size_nm=pixel_size_nm, brightfield=brightfield,
                          neighbours=neighbours, cell_painting=cell_painting, perturbation=perturbation, optics=optics)
    return synth.simulate_store(out, n, cfg, sequences=sequences, seed=seed, cells_per_protein=cells_per_protein,
                                image_dtype=image_dtype, workers=workers, mask_names=mask_names_of(masks),
                                overwrite=overwrite)
