"""``locscope demo``: the main job on bundled inputs (``make demo``).

Generates localization images with the bundled CELL-Diff model (``celldiff-tiny``) for the bundled example proteins in
a bundled simulated landmark cell. ``--simulator`` shows the virtual-cell simulator's example GFP fusions instead.
Needs no data outside the package.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from locscope.cli.app import app
from locscope.cli.options import DeviceOption, OverwriteOption, SeedOption


@app.command("demo")
def demo_command(
    out: Path = typer.Option(Path("demo_output"), "--out", help="Output folder (report.html, summary.json/.csv, images)."),
    overwrite: bool = OverwriteOption,
    seed: int = SeedOption,
    device: str = DeviceOption,
    samples: int = typer.Option(4, "--samples", help="Generated images per protein."),
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
        from locscope.io.sequences import read_sequences
        from locscope.models.hub import asset_path
        from locscope.pipelines.generate import generate

        fasta = asset_path("examples/proteins.fasta")
        landmarks = asset_path("examples/landmarks/cell_1")
        proteins = [(record.id, record.sequence) for record in read_sequences(fasta)]
        result = generate(proteins, [landmarks], out, model="celldiff-tiny", samples=samples, seed=seed,
                          device=device, overwrite=overwrite, output_command="demo")
        typer.echo(f"{'protein':<26} {'generated image':<22} sequence head")
        for entry in result.sequences:
            typer.echo(f"{entry['id']:<26} {entry['top_compartment_image'] or '-':<22} {entry['top_compartment_head']}")
    typer.echo(f"wrote {out / 'report.html'} ({time.perf_counter() - start:.1f} s)")
