"""``locscope simulate``: write simulated cells with exact ground truth to a dataset store."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from locscope.cli.app import app
from locscope.cli.options import OverwriteOption, SeedOption


@app.command("simulate")
def simulate_command(
    out: Path = typer.Option(..., "--out", help="Store directory to write (atomic; a killed run resumes)."),
    overwrite: bool = OverwriteOption,
    n: int = typer.Option(1000, "--n", help="Number of images."),
    size: int = typer.Option(128, "--size", help="Image side in pixels (32-64 for CPU training, up to 512)."),
    sequences: Optional[Path] = typer.Option(
        None, "--sequences", help="Real proteins: a level table with sequences (e.g. opencell_raw.csv: label-faithful "
        "cells) or a FASTA/CSV of sequences (placed by the motif grammar). Default: grammar-written proteins."),
    seed: int = SeedOption,
    mode: str = typer.Option("crop", "--mode", help="crop (one cell) | field (several touching, border-cut cells)."),
    neighbours: bool = typer.Option(False, "--neighbours", help="Crop mode: add neighbouring cells cut by the border."),
    cell_painting: bool = typer.Option(False, "--cell-painting", help="Also render dna, rna, er, agp, mito."),
    brightfield: bool = typer.Option(False, "--brightfield", help="Also render a brightfield channel."),
    perturbation: Optional[str] = typer.Option(
        None, "--perturbation", help="Cell Painting phenotype: random | control | fragmented-mitochondria | "
        "condensed-nuclei | enlarged-cells | disrupted-microtubules."),
    pixel_size_nm: Optional[float] = typer.Option(None, "--pixel-size-nm", help="Pixel size (default: a cell fills "
                                                  "80% of a crop)."),
    cells_per_protein: int = typer.Option(1, "--cells-per-protein", help="Images per protein (different cells)."),
    no_optics: bool = typer.Option(False, "--no-optics", help="Clean images: no blur, illumination or noise."),
    float32: bool = typer.Option(False, "--float32", help="Store float32 images instead of uint16."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Parallel processes (default: the available "
                                          "cores; the output does not depend on it)."),
    masks: str = typer.Option("all", "--masks", help="Compartment masks to store: all | none | a comma list "
                              "(fewer masks write faster)."),
) -> None:
    """Simulate cells (landmarks + protein + a mask per compartment + labels + provenance) into a store."""
    from locscope.pipelines.simulate import simulate

    store = simulate(out, n, size=size, sequences=sequences, seed=seed, mode=mode, neighbours=neighbours,
                     cell_painting=cell_painting, brightfield=brightfield, perturbation=perturbation,
                     pixel_size_nm=pixel_size_nm, cells_per_protein=cells_per_protein, optics=not no_optics,
                     image_dtype="float32" if float32 else "uint16", workers=workers, masks=masks,
                     overwrite=overwrite)
    counts = {split: len(store.split_indices(split)) for split in ("train", "val", "test")}
    typer.echo(f"wrote {len(store)} cells ({size}x{size}, {store.attrs['pixel_size_nm']:.0f} nm/px, channels "
               f"{', '.join(store.channels)}) to {out}; splits {counts}")
