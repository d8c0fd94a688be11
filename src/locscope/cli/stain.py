"""``locscope stain``: brightfield -> Cell Painting channels with class guidance."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from locscope.cli.app import app
from locscope.cli.options import DeviceOption, OverwriteOption, SeedOption


@app.command("stain")
def stain_command(
    brightfield: List[Path] = typer.Option(..., "--brightfield", help="Brightfield stacks, one file per plane, or a "
                                           "folder of them (repeat the option for several)."),
    class_name: Optional[str] = typer.Option(None, "--class", help="Perturbation / target class (default: none, "
                                             "the unconditioned null class)."),
    classifier_scale: float = typer.Option(0.0, "--classifier-scale", help="Classifier-guidance scale s (needs "
                                           "--class and a model with a classifier)."),
    guidance: Optional[float] = typer.Option(None, "--guidance", help="Classifier-free guidance weight (needs "
                                             "--class; 1 = the plain conditional model)."),
    sampler: str = typer.Option("ddpm", "--sampler", help="ddpm (the published ancestral sampler, respaced to "
                                "--steps) | ddim | dpmsolver."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Sampler steps (default: DDPM 25, DDIM 50, "
                                        "DPM-Solver++ 20; DDPM with all of the model's steps is the published "
                                        "procedure)."),
    samples: int = typer.Option(1, "--samples", help="Predictions per image."),
    model: str = typer.Option("stain-tiny", "--model", help="Bundled model name, model directory, or a released "
                              "*_Network.pth with its network_config.json beside it."),
    out: Path = typer.Option(..., "--out", help="Output directory."),
    seed: int = SeedOption,
    device: str = DeviceOption,
    overwrite: bool = OverwriteOption,
) -> None:
    """Predict the Cell Painting channels (DNA, RNA, ER, AGP, Mito) of brightfield images."""
    from locscope.pipelines.stain import run_stain

    result = run_stain(brightfield, out, class_name=class_name, classifier_scale=classifier_scale, guidance=guidance,
                       sampler=sampler, steps=steps, samples=samples, model=model, seed=seed, device=device,
                       overwrite=overwrite)
    typer.echo(f"{len(result.images)} image(s) stained ({result.network_evaluations} network evaluations per image); "
               f"report: {result.report}")
