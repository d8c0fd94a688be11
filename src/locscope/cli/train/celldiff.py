"""``locscope train celldiff``: CELL-Diff on a dataset store."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from locscope.cli.train import train_app


@train_app.command("celldiff")
def train_celldiff_command(
    data: Path = typer.Option(..., "--data", help="Dataset store (protein + landmark channels, sequences, labels)."),
    config: Optional[Path] = typer.Option(None, "--config", help="Training config (YAML/JSON; CellDiffTrainConfig)."),
    out: Path = typer.Option(..., "--out", help="Run directory (checkpoints, samples, metrics, final model)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
) -> None:
    """Train CELL-Diff (sequence + landmarks -> protein image, masked residues, compartments)."""
    from locscope.training.celldiff_module import CellDiffTrainConfig, train_celldiff
    from locscope.training.common import read_train_config

    settings = None if resume else read_train_config(config, CellDiffTrainConfig)
    model_dir = train_celldiff(data, out, settings, resume=resume)
    typer.echo(f"model written to {model_dir}")
