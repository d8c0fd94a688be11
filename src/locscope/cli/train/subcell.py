"""``locscope train subcell``: a SubCell encoder, then its classifiers."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from locscope.cli.options import DeviceOption, SeedOption
from locscope.cli.train import train_app


@train_app.command("subcell")
def train_subcell_command(
    data: Path = typer.Option(..., "--data", help="Store with protein + landmark channels and SubCell labels."),
    out: Path = typer.Option(..., "--out", help="Run directory (checkpoints/, logs/, model/, metrics.json)."),
    epochs: int = typer.Option(30, "--epochs", help="Self-supervised epochs."),
    batch_size: int = typer.Option(64, "--batch-size", help="Cells per batch (whole proteins)."),
    learning_rate: float = typer.Option(1e-3, "--lr", help="AdamW learning rate."),
    mae_weight: float = typer.Option(1.0, "--mae-weight", help="Masked-reconstruction loss weight (0 = off)."),
    mask_ratio: float = typer.Option(0.25, "--mask-ratio", help="Fraction of masked patches."),
    num_classifiers: int = typer.Option(3, "--classifiers", help="MLP classifier ensemble size."),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", help="Wall-time cap of the SSL stage."),
    resume: bool = typer.Option(False, "--resume", help="Continue from checkpoints/last.ckpt."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads (1 is fastest for tiny models)."),
    seed: int = SeedOption,
    device: str = DeviceOption,
) -> None:
    """Train a SubCell encoder (protein SupCon + cell NT-Xent + masked reconstruction), then its classifiers."""
    from locscope.training.subcell_module import train_subcell

    metrics = train_subcell(data, out, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                            mae_weight=mae_weight, mask_ratio=mask_ratio, num_classifiers=num_classifiers, seed=seed,
                            device=device, resume=resume, max_minutes=max_minutes, threads=threads)
    typer.echo(f"held-out: macro-AP {metrics['macro_ap']:.3f}, accuracy {metrics['accuracy']:.3f}, "
               f"k-NN accuracy {metrics['knn_accuracy']:.3f} -> {out}/model")
