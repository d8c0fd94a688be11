"""``locscope explain``: in-silico mutagenesis, which residues drive the predicted localization."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from locscope.cli.app import app
from locscope.cli.options import (
    DeviceOption, GuidanceOption, MaxLengthOption, OverwriteOption, SamplerOption, SamplesOption, SeedOption, SequenceBatchOption, StepsOption, TruncateOption,
)


@app.command("explain")
def explain_command(
    sequence: str = typer.Option(..., "--sequence", help="The protein sequence to explain."),
    max_length: int = MaxLengthOption,
    truncate: bool = TruncateOption,
    out: Path = typer.Option(..., "-o", "--out", help="Output folder (track.png, report.html, explain.json)."),
    overwrite: bool = OverwriteOption,
    window: int = typer.Option(7, "--window", help="Residues mutated to alanine together (1 = single residues)."),
    stride: int = typer.Option(2, "--stride", help="Residues between window starts."),
    target: Optional[str] = typer.Option(None, "--target", help="Level-3 class to explain (default: the top class)."),
    model: Optional[str] = typer.Option(None, "--model", help="Model directory or bundled name: a localizer for "
                                       "--method localizer (default localizer-small), else CELL-Diff or latent "
                                       "diffusion (default: the default generator) or CELL-E 2 (celle2-tiny; method "
                                       "image)."),
    method: str = typer.Option("combined", "--method", help="localizer (the sequence localizer trained on real "
                               "proteins; no images) | image (K generated images read off the simulator's "
                               "compartments) | head (CELL-Diff's sequence-only compartment head) | combined (mean)."),
    samples: int = SamplesOption,
    seed: int = SeedOption,
    sampler: str = SamplerOption,
    steps: int | None = StepsOption,
    guidance: float | None = GuidanceOption,
    batch_size: int = SequenceBatchOption,
    device: str = DeviceOption,
    label_style: Optional[str] = typer.Option(None, "--label-style", help="With --method localizer: uniprot (default) "
                                              "| image (see locscope localize --help)."),
) -> None:
    """In-silico mutagenesis: which residues drive the predicted localization."""
    from locscope.pipelines.explain import explain

    scan, segments = explain(sequence, out, model=model, method=method, samples=samples, window=window, stride=stride,
                             target=target, sampler=sampler, steps=steps, guidance=guidance, batch_size=batch_size,
                             seed=seed, device=device, overwrite=overwrite, max_length=max_length,
                             truncate=truncate, label_style=label_style)
    typer.echo(f"predicted {scan.compartment} ({scan.wild_type[scan.target]:.2f})")
    for segment in segments:
        typer.echo("  " + segment.describe(scan.compartment))
    typer.echo(f"report -> {out}/report.html")
