"""``locscope classify``: the most probable localization classes of each cell (SubCell)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from locscope.cli.app import app
from locscope.cli.options import DeviceOption, with_subcell_options
from locscope.errors import InputError


@app.command("classify")
@with_subcell_options
def classify(
    images: List[Path] = typer.Argument(..., help="Multi-channel images (TIFF stacks, HPA RGB composites)."),
    channel_order: Optional[str] = typer.Option(None, "--channel-order", help="Comma-separated channel names of the "
                                                "files, e.g. microtubules,protein,nucleus,er (RGB default: "
                                                "microtubules,protein,nucleus)."),
    segment: bool = typer.Option(False, "--segment", help="Images are fields of view: segment and crop cells first."),
    crop_size: int = typer.Option(512, "--crop-size", help="With --segment: crop side in pixels."),
    output_size: Optional[int] = typer.Option(None, "--output-size", help="With --segment: resize crops to this side."),
    top: int = typer.Option(3, "--top", help="Number of classes to print per cell."),
    subcell: dict = None,  # --model ... --image-size: with_subcell_options
    device: str = DeviceOption,
) -> None:
    """Print the most probable localization classes of each cell (tab-separated: id, class (probability), ...)."""
    from locscope.channels import canonical_channel
    from locscope.pipelines.classify import classify_images

    order = None
    if channel_order:
        try:
            order = [canonical_channel(name) for name in channel_order.split(",")]
        except ValueError as err:
            raise InputError(f"--channel-order: {err}") from None
    ranked, _ = classify_images(images, channel_order=order, segment=segment, crop_size=crop_size,
                                output_size=output_size, top=top, device=device, **subcell)
    for cell_id, classes in ranked:
        typer.echo("\t".join([cell_id, *(f"{name} ({p:.3f})" for name, p in classes)]))
