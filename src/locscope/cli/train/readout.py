"""``locscope train readout``: the compartment read-out classifier that scores generated images."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from locscope.cli.options import OverwriteOption
from locscope.cli.train import train_app


@train_app.command("readout")
def train_readout_command(
    data: Path = typer.Option(..., "--data", help="Training store of simulated cells (locscope train celldiff-data)."),
    out: Path = typer.Option(..., "--out", help="Model directory to write."),
    config: Optional[Path] = typer.Option(None, "--config", help="Training config (YAML/JSON; ReadoutTrainConfig)."),
    overwrite: bool = OverwriteOption,
) -> None:
    """Train the level-3 compartment read-out classifier on simulated cells (it scores generated images)."""
    from locscope.training.common import read_train_config
    from locscope.training.readout_module import ReadoutTrainConfig, train_readout_from_store
    from locscope.utils.outputs import output_folder

    train_config = read_train_config(config, ReadoutTrainConfig)
    with output_folder(out, "train readout", overwrite=overwrite) as work:
        _, metrics = train_readout_from_store(data, work, train_config)
    typer.echo(f"model written to {out} (validation accuracy {metrics['val_accuracy']:.3f} on "
               f"{metrics['val_items']} cells)")
