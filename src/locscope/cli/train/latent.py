"""``locscope train latent``: the latent diffusion family's denoiser on a trained autoencoder's latents."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from locscope.cli.train import train_app


@train_app.command("latent")
def train_latent_command(
    data: Path = typer.Option(..., "--data", help="Dataset store (protein + nucleus + landmarks, sequences, labels)."),
    autoencoder: Path = typer.Option(..., "--autoencoder", help="Trained autoencoder directory "
                                     "(RUN/model of `train latent-autoencoder`)."),
    config: Optional[Path] = typer.Option(None, "--config", help="Training config (YAML/JSON; LatentTrainConfig)."),
    out: Path = typer.Option(..., "--out", help="Run directory (checkpoints, samples, metrics, final model)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
) -> None:
    """Train the latent family's denoiser on latents of a trained autoencoder; writes a complete model."""
    from locscope.training.common import read_train_config
    from locscope.training.latent_module import LatentTrainConfig, train_latent

    settings = None if resume else read_train_config(config, LatentTrainConfig)
    typer.echo(f"model written to {train_latent(data, autoencoder, out, settings, resume=resume)}")
