"""``locscope train condition-prior``: when a generator defers to the sequence localizer, chosen on validation proteins."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from locscope.cli.options import DeviceOption, OverwriteOption
from locscope.cli.train import train_app


@train_app.command("condition-prior")
def train_condition_prior_command(
    model: Path = typer.Option(..., "--model", help="Model directory of a CELL-Diff or latent diffusion model with "
                               "the compartment bottleneck; condition_prior.json is written into it."),
    corpus: Path = typer.Option(..., "--corpus", help="Shared-data folder (OpenCell + DeepLoc 1.0 files; SCL2205 "
                                "from p-scldata): its validation split's human proteins are one validation set."),
    localizer: str = typer.Option("localizer-small", "--localizer", help="Bundled localizer name or directory."),
    label_style: Optional[str] = typer.Option("image", "--label-style", help="The localizer's label style (image | "
                                              "uniprot)."),
    grammar: int = typer.Option(400, "--grammar", help="Grammar proteins (held-out motif variants, their own seed) "
                                "in the other validation set."),
    placement: str = typer.Option("soft", "--placement", help="The model's default placement, recorded in the file "
                                  "(soft | sample | top; generate --placement overrides it)."),
    overwrite: bool = OverwriteOption,
    device: str = DeviceOption,
) -> None:
    """Choose how much, and when, a generator's condition defers to the localizer (grid on validation proteins)."""
    from locscope.pipelines.condition import train_condition_prior

    result = train_condition_prior(model, corpus, localizer=localizer, label_style=label_style, grammar=grammar,
                                   placement=placement, overwrite=overwrite, device=device)
    prior, alone, chosen = result["prior"], result["head alone"], result["chosen"]
    typer.echo(f"weight {prior['weight']:g} below {prior['below']:g}: real val {alone['real']:.3f} -> "
               f"{chosen['real']:.3f}, grammar val {alone['grammar']:.3f} -> {chosen['grammar']:.3f} "
               f"(written to {model / 'condition_prior.json'})")
