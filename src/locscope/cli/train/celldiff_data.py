"""``locscope train celldiff-data``: simulated CELL-Diff training data."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from locscope.cli.options import OverwriteOption, SeedOption
from locscope.cli.train import train_app


@train_app.command("celldiff-data")
def celldiff_data_command(
    out: Path = typer.Option(..., "--out", help="Store directory to write."),
    overwrite: bool = OverwriteOption,
    sequences: Optional[Path] = typer.Option(None, "--sequences", help="Level table with sequences "
                                             "(opencell_raw.csv): real proteins in label-faithful cells."),
    corpus: Optional[Path] = typer.Option(None, "--corpus", help="Shared-data folder (OpenCell + DeepLoc 1.0 files; "
                                          "SCL2205 from p-scldata): the real-protein corpus in label-faithful cells, "
                                          "each protein in its homology-aware corpus split (instead of --sequences)."),
    corpus_limit: Optional[int] = typer.Option(None, "--corpus-limit", help="At most this many corpus proteins, "
                                               "drawn at random (--seed) from every split alike."),
    size: int = typer.Option(32, "--size", help="Image side in pixels."),
    cells_per_protein: int = typer.Option(4, "--cells-per-protein"),
    synthetic: int = typer.Option(4000, "--synthetic", help="Cells with rule-grammar proteins."),
    masks: bool = typer.Option(False, "--masks", help="Also store compartment masks (for evaluation)."),
    workers: int = typer.Option(1, "--workers"),
    seed: int = SeedOption,
) -> None:
    """Simulate CELL-Diff training data: real sequences in label-faithful cells + grammar proteins."""
    from locscope.training.celldiff_data import build_training_store

    store = build_training_store(out, sequences, image_size=size, cells_per_protein=cells_per_protein,
                                 n_synthetic=synthetic, seed=seed, workers=workers, masks=masks, overwrite=overwrite,
                                 corpus=corpus, corpus_limit=corpus_limit)
    typer.echo(f"{len(store)} items written to {out}")
