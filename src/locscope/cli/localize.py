"""``locscope localize``: level-3 / level-2 / level-1 localization probabilities of protein sequences."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from locscope.cli.app import app
from locscope.cli.options import (
    DeviceOption, GuidanceOption, SamplerOption, SamplesOption, SeedOption, SequenceBatchOption, StepsOption,
)
from locscope.errors import InputError
from locscope.io.sequences import read_sequence_text


@app.command("localize")
def localize_command(
    sequence: Optional[str] = typer.Option(None, "--sequence", help="One protein sequence."),
    fasta: Optional[Path] = typer.Option(None, "--fasta", help="FASTA (or sequence table) of proteins, any size and "
                                         "sequence length; streamed."),
    out: Optional[Path] = typer.Option(None, "--out", help="Predictions CSV (default: print to stdout)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
    method: Optional[str] = typer.Option(None, "--method", help="localizer (default: the sequence localizer trained "
                                         "on real proteins) | image | head | combined (CELL-Diff; the default for a "
                                         "CELL-Diff --model; a CELL-E 2 --model runs image)."),
    samples: int = SamplesOption,
    head_weight: float = typer.Option(0.5, "--head-weight", help="Weight of the compartment head in 'combined'."),
    sampler: str = SamplerOption,
    steps: int | None = StepsOption,
    guidance: float | None = GuidanceOption,
    batch_size: int = SequenceBatchOption,
    model: Optional[str] = typer.Option(None, "--model", help="Localizer (localizer-small, default), CELL-Diff "
                                       "(celldiff-64, the generator default), latent diffusion (latent-tiny) or CELL-E 2 (celle2-tiny) "
                                       "bundled name or model directory."),
    seed: int = SeedOption,
    device: str = DeviceOption,
    label_style: Optional[str] = typer.Option(None, "--label-style", help="Annotation style of a localizer's "
                                              "probabilities: uniprot (default; Swiss-Prot-style curated locations) "
                                              "| image (what imaging of tagged human proteins shows, OpenCell)."),
) -> None:
    """Level-3, level-2 and level-1 localization probabilities and the top class of each protein."""
    from locscope.pipelines.localize import localize, localize_file

    if (sequence is None) == (fasta is None):
        raise InputError("localize: give exactly one of --sequence SEQ or --fasta FILE")
    options = dict(model=model, method=method, samples=samples, head_weight=head_weight, sampler=sampler, steps=steps,
                   guidance=guidance, batch_size=batch_size, seed=seed, device=device, label_style=label_style)
    if fasta is not None:
        count = localize_file(fasta, out, progress=True, write=(lambda text: typer.echo(text, nl=False)),
                              overwrite=overwrite, **options)
        if out is not None:
            typer.echo(f"{count} proteins -> {out}")
        return
    if "<" in sequence:
        raise InputError("--sequence: localize needs a complete sequence (no <mask>)")
    sequence = read_sequence_text(sequence, max_length=None).sequence  # the FASTA rules; any length, as --fasta
    prediction, text = localize([sequence], ["sequence"], out, progress=True, overwrite=overwrite, **options)
    if out is None:
        typer.echo(text, nl=False)
    else:
        typer.echo(f"1 protein -> {out}")
