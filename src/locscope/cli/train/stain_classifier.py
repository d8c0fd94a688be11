"""``locscope train stain-classifier``: the noisy-image classifier of classifier guidance."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from locscope.cli.train import train_app
from locscope.cli.train.stain import train_stain_kind


@train_app.command("stain-classifier")
def train_stain_classifier_command(
    data: Optional[Path] = typer.Option(None, "--data", help="Dataset store (as for train stain; default: simulator)."),
    config: Optional[Path] = typer.Option(None, "--config", help="Training config (YAML/JSON; StainTrainConfig)."),
    out: Path = typer.Option(..., "--out", help="Run directory (checkpoints, metrics, final model)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
) -> None:
    """Train the noisy-image classifier p(class | y_t) used by --classifier-scale."""
    train_stain_kind("classifier", data, config, out, resume)
