"""``locscope train designer``: the compartment-conditioned sequence designer."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from locscope.cli.train import train_app


@train_app.command("designer")
def train_designer_command(
    out: Path = typer.Option(..., "--out", help="Run directory (checkpoints, metrics, final model)."),
    config: Optional[Path] = typer.Option(None, "--config", help="Training config (YAML/JSON; DesignerTrainConfig)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
) -> None:
    """Train the sequence designer (compartment distribution -> masked residues) on simulator proteins."""
    from locscope.training.common import read_train_config
    from locscope.training.designer_module import DesignerTrainConfig, train_designer

    model_dir = train_designer(out, None if resume else read_train_config(config, DesignerTrainConfig), resume=resume)
    typer.echo(f"model written to {model_dir}")
