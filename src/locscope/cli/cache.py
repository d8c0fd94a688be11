"""``locscope cache``: list or clear the calibrated int8 SubCell models of ``embed`` / ``classify``."""

from __future__ import annotations

import typer

from locscope.cli.app import app


@app.command("cache")
def cache(clear: bool = typer.Option(False, "--clear", help="Delete every cached model.")) -> None:
    """List (or --clear) the calibrated int8 SubCell models that `embed` / `classify` cached."""
    from locscope.pipelines.embed_runtime import cache_entries, cache_root, clear_cache

    if clear:
        typer.echo(f"removed {clear_cache() / 1e6:.1f} MB from {cache_root() / 'openvino'}")
        return
    entries = cache_entries()
    typer.echo(f"{len(entries)} cached int8 model(s) in {cache_root() / 'openvino'}")
    for entry in entries:
        if entry.get("damaged"):
            typer.echo(f"{entry['key']}\t{entry['bytes'] / 1e6:.1f} MB\tdamaged (recalibrated when needed)")
            continue
        size = "x".join(map(str, entry.get("image_size", [])))
        typer.echo(f"{entry['key']}\t{entry['bytes'] / 1e6:.1f} MB\t{size} {entry.get('channels', '')}\t"
                   f"ViT {entry.get('layers')} x {entry.get('hidden_size')}\tcalibrated on "
                   f"{entry.get('calibration_cells')} cells, checked at cosine {entry.get('min_cosine', 0):.5f}\t"
                   f"{entry.get('created', '')}")
