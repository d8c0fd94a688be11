"""``locscope evaluate``: score generated images against real ones and write a report folder."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from locscope.cli.app import app
from locscope.cli.options import DeviceOption, OverwriteOption, SeedOption


@app.command("evaluate")
def evaluate_command(
    real: Path = typer.Option(..., "--real", help="Folder of real images or a locscope store."),
    generated: Path = typer.Option(..., "--generated", help="Folder of generated images or a locscope store."),
    out: Path = typer.Option(..., "--out", help="Report folder (metrics.json, items.csv, report.html)."),
    overwrite: bool = OverwriteOption,
    pixel_size: Optional[float] = typer.Option(
        None, "--pixel-size", help="Pixel size in nm for MSF (HPA 320, OpenCell 206); default: from the data."),
    features: Optional[str] = typer.Option(
        None, "--features",
        help="Feature network for FID and k-NN: a local InceptionV3 weights file (pytorch-fid "
             "pt_inception-2015-12-05-*.pth), 'encoder' (locscope's image encoder) or 'handcrafted'; "
             "default: the encoder when available, else handcrafted."),
    max_pictures: int = typer.Option(12, "--max-pictures", help="Pairs shown as pictures in the report."),
    seed: int = SeedOption,
    device: str = DeviceOption,
) -> None:
    """Pair items by id and compute IoU, MSF, FID-O/FID-T, SSIM/PSNR/PCC/MSE/MAE, CELL-E 2 and feature metrics."""
    from locscope.pipelines.evaluate import evaluate

    result = evaluate(real, generated, out, pixel_size_nm=pixel_size, features=features, device=device, seed=seed,
                      max_pictures=max_pictures, overwrite=overwrite)
    summary = result.summary
    typer.echo(f"{summary['n_pairs']} pairs; features: {summary['feature_network']}")
    for name in ("iou", "ssim_protein", "pcc_protein"):
        if name in result.per_metric and result.per_metric[name]["mean"] is not None:
            typer.echo(f"{name}: {result.per_metric[name]['mean']:.4f} ± {result.per_metric[name]['std']:.4f}")
    for name, value in result.set_metrics.items():
        if value is not None:
            typer.echo(f"{name}: {value:.4f}")
    typer.echo(f"report: {out / 'report.html'}")
