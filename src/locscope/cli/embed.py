"""``locscope embed``: SubCell single-cell embeddings and class probabilities (AnnData)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from locscope.cli.app import app
from locscope.cli.options import DeviceOption, OverwriteOption, with_subcell_options


@app.command("embed")
@with_subcell_options
def embed(
    out: Path = typer.Option(..., "-o", "--out", help="Output folder (embeddings.h5ad, result.csv, ...)."),
    overwrite: bool = OverwriteOption,
    csv_path: Optional[Path] = typer.Option(None, "--csv", help="SubCell path list: r_image,y_image,b_image,g_image,"
                                                                 "output_prefix ('#' rows are comments)."),
    store_path: Optional[Path] = typer.Option(None, "--store", help="A locscope dataset store instead of a CSV."),
    split: Optional[str] = typer.Option(None, "--split", help="Only this split of the store: train | val | test."),
    subcell: dict = None,  # --model ... --image-size: with_subcell_options
    save_npy: bool = typer.Option(False, "--save-npy", help="Also write {prefix}_embedding.npy / _probabilities.npy."),
    save_attention: bool = typer.Option(False, "--save-attention", help="Also write {prefix}_attention_map.png."),
    device: str = DeviceOption,
) -> None:
    """Embed single cells with SubCell: AnnData embeddings + per-class probabilities."""
    from locscope.pipelines.embed import run_embed

    result = run_embed(out, csv_path=csv_path, store_path=store_path, split=split, device=device, save_npy=save_npy,
                       save_attention=save_attention, overwrite=overwrite, **subcell)
    for mode in result.modes:
        typer.echo(f"inference: {mode.describe()}", err=True)
    if result.modes and result.modes[0].cpu:
        from locscope.utils.cpu import CpuCapability

        typer.echo(f"inference CPU: {CpuCapability.from_dict(result.modes[0].cpu).describe()}", err=True)
    typer.echo(f"embedded {len(result.ids)} cells ({result.embeddings.shape[1]}-d) -> {out}/embeddings.h5ad")
