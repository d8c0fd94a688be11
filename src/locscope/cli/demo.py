"""``locscope demo``: the main job on bundled inputs (``make demo``).

Generates localization images with the bundled default generator for five well-known human proteins (a histone, an
outer-mitochondrial-membrane receptor, an ER chaperone, a membrane-anchored GTPase and a glycolytic enzyme; UniProt
sequences, ``assets/examples/human_proteins.fasta``) in a bundled simulated landmark cell, and reports beside each its
annotated level-3 compartment and the compartment every sample shows. ``--simulator`` shows the virtual-cell
simulator's example GFP fusions instead.
Needs no data outside the package.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from locscope.cli.app import app
from locscope.cli.options import ConditionOption, DeviceOption, OverwriteOption, SeedOption


@app.command("demo")
def demo_command(
    out: Path = typer.Option(Path("demo_output"), "--out", help="Output folder (report.html, summary.json/.csv, images)."),
    overwrite: bool = OverwriteOption,
    seed: int = SeedOption,
    device: str = DeviceOption,
    samples: int = typer.Option(4, "--samples", help="Generated images per protein."),
    condition: str = ConditionOption,
    simulator: bool = typer.Option(False, "--simulator", help="Show simulated example GFP fusions instead (no model)."),
    size: int = typer.Option(128, "--size", help="Image side in pixels (with --simulator)."),
) -> None:
    """Generate localization images for example proteins with the bundled model and write a report."""
    start = time.perf_counter()
    if simulator:
        from locscope.synth.demo import write_simulator_demo

        payload = write_simulator_demo(out, seed=seed, size=size, overwrite=overwrite)
        for r in payload["examples"]:
            typer.echo(f"{r['name']:>14}  {r['rule']:<22} {', '.join(r['compartments'])}")
    else:
        from locscope.models.hub import asset_path
        from locscope.pipelines.generate import generate
        from locscope.pipelines.generate_outputs import DEMO_LANDMARKS, demo_proteins

        examples = demo_proteins()
        landmarks = asset_path(DEMO_LANDMARKS)
        proteins = [(example.id, example.sequence) for example in examples]
        expected = {example.id: example.expected_level3 for example in examples}
        result = generate(proteins, [landmarks], out, samples=samples, seed=seed, device=device,
                          overwrite=overwrite, output_command="demo", expected=expected, condition=condition)
        typer.echo(f"{'protein':<16} {'annotated':<20} {'drawn (read-out)':<20} {'right':<7} sequence head")
        for entry in result.sequences:
            right = entry.get("samples_right")
            typer.echo(f"{entry['id']:<16} {entry.get('expected_level3', '-'):<20} {entry['drawn_level3'] or '-':<20} "
                       f"{'-' if right is None else f'{right}/{samples}':<7} {entry['top_compartment_head']}")
    typer.echo(f"wrote {out / 'report.html'} ({time.perf_counter() - start:.1f} s)")
