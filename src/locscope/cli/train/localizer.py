"""``locscope train localizer``: the sequence localizer on the real-protein corpus."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from locscope.cli.train import train_app


@train_app.command("localizer")
def train_localizer_command(
    out: Path = typer.Option(..., "--out", help="Run directory (checkpoint, metrics.jsonl, best model in model/)."),
    config: Optional[Path] = typer.Option(None, "--config", help="Training config (YAML/JSON; LocalizerTrainConfig)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last epoch checkpoint."),
) -> None:
    """Train the sequence localizer (level 1/2/3) on SCL2205 + OpenCell + DeepLoc 1.0 with homology-aware splits."""
    from locscope.training.common import read_train_config
    from locscope.training.localizer_module import LocalizerTrainConfig, train_localizer

    model_dir = train_localizer(out, None if resume else read_train_config(config, LocalizerTrainConfig), resume=resume)
    typer.echo(f"model written to {model_dir}")
