"""``locscope train latent-autoencoder``: the latent diffusion family's autoencoder."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from locscope.cli.train import train_app


@train_app.command("latent-autoencoder")
def train_latent_autoencoder_command(
    data: Path = typer.Option(..., "--data", help="Dataset store (protein + nucleus, optionally er / microtubules)."),
    config: Optional[Path] = typer.Option(None, "--config", help="Training config (YAML/JSON; "
                                          "LatentAutoencoderTrainConfig)."),
    out: Path = typer.Option(..., "--out", help="Run directory (checkpoints, samples, metrics, final autoencoder)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
) -> None:
    """Train the latent family's autoencoder (L1 + KL + perceptual + patch discriminator)."""
    from locscope.training.common import read_train_config
    from locscope.training.latent_module import LatentAutoencoderTrainConfig, train_latent_autoencoder

    settings = None if resume else read_train_config(config, LatentAutoencoderTrainConfig)
    typer.echo(f"autoencoder written to {train_latent_autoencoder(data, out, settings, resume=resume)}")
