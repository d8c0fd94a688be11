"""``locscope train latent-autoencoder`` and ``locscope train latent``: the latent diffusion family's two stages."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from locscope.cli.train_cmd import train_app


@train_app.command("latent-autoencoder")
def train_latent_autoencoder_command(
    data: Path = typer.Option(..., "--data", help="Dataset store (protein + nucleus, optionally er / microtubules)."),
    config: Optional[Path] = typer.Option(None, "--config", help="Training config (YAML/JSON; "
                                          "LatentAutoencoderTrainConfig)."),
    out: Path = typer.Option(..., "--out", help="Run directory (checkpoints, samples, metrics, final autoencoder)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
) -> None:
    """Train the latent family's autoencoder (L1 + KL + perceptual + patch discriminator)."""
    from locscope.training.celldiff_module import read_train_config
    from locscope.training.latent_module import LatentAutoencoderTrainConfig, train_latent_autoencoder

    settings = None if resume else read_train_config(config, LatentAutoencoderTrainConfig)
    typer.echo(f"autoencoder written to {train_latent_autoencoder(data, out, settings, resume=resume)}")


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
    from locscope.training.celldiff_module import read_train_config
    from locscope.training.latent_module import LatentTrainConfig, train_latent

    settings = None if resume else read_train_config(config, LatentTrainConfig)
    typer.echo(f"model written to {train_latent(data, autoencoder, out, settings, resume=resume)}")
