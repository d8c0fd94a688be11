"""``locscope train stain``: the virtual-staining denoiser."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from locscope.cli.train import train_app


def train_stain_kind(kind: str, data: Optional[Path], config: Optional[Path], out: Path, resume: bool) -> None:
    """Train the staining ``kind`` (``"denoiser"`` or ``"classifier"``) with ``--data`` overriding the config's store."""
    from locscope.training.common import read_train_config
    from locscope.training.stain_module import StainTrainConfig, train_stain

    train_config = None
    if not resume:
        train_config = read_train_config(config, StainTrainConfig)
        if data is not None:
            train_config.data = str(data)
    model_dir = train_stain(out, train_config, kind=kind, resume=resume)
    typer.echo(f"model written to {model_dir}")


@train_app.command("stain")
def train_stain_command(
    data: Optional[Path] = typer.Option(None, "--data", help="Dataset store with brightfield + Cell Painting channels "
                                        "and perturbations (default: simulator cells rendered for every step)."),
    config: Optional[Path] = typer.Option(None, "--config", help="Training config (YAML/JSON; StainTrainConfig)."),
    out: Path = typer.Option(..., "--out", help="Run directory (checkpoints, metrics, final model)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
) -> None:
    """Train the virtual-staining denoiser (brightfield -> Cell Painting, class through AdaGN)."""
    train_stain_kind("denoiser", data, config, out, resume)
