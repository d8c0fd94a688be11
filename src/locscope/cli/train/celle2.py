"""``locscope train celle2``: train CELL-E 2 (tokenizers, then the masked-token transformer) on a dataset store."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from locscope.cli.train import train_app


@train_app.command("celle2")
def train_celle2_command(
    data: Path = typer.Option(..., "--data", help="Dataset store with protein + nucleus images and sequences "
                                                  "(locscope train celldiff-data)."),
    out: Path = typer.Option(..., "--out", help="Run directory (checkpoints, metrics, final model)."),
    config: Optional[Path] = typer.Option(None, "--config", help="Training config (YAML/JSON; Celle2TrainConfig)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
) -> None:
    """Train CELL-E 2: the two VQGAN tokenizers, then the bidirectional transformer (MaskGIT masking)."""
    from locscope.training.common import read_train_config
    from locscope.training.celle2_module import Celle2TrainConfig, train_celle2

    model_dir = train_celle2(data, out, None if resume else read_train_config(config, Celle2TrainConfig), resume=resume)
    typer.echo(f"model written to {model_dir}")
