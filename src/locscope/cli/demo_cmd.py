"""``locscope demo``: the main job on bundled inputs (``make demo``)."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from locscope.cli.app import SeedOption, app


@app.command("demo")
def demo_command(
    out: Path = typer.Option(Path("demo_output"), "--out", help="Output folder (demo.png, report.html, results.json)."),
    seed: int = SeedOption,
    size: int = typer.Option(128, "--size", help="Image side in pixels."),
) -> None:
    """Simulate example GFP fusions (nuclear, mitochondrial, ER, plasma membrane, cytosolic, ...) and write a report."""
    from locscope.synth.demo import write_simulator_demo

    start = time.perf_counter()
    payload = write_simulator_demo(out, seed=seed, size=size)
    for r in payload["examples"]:
        typer.echo(f"{r['name']:>14}  {r['rule']:<22} {', '.join(r['compartments'])}")
    typer.echo(f"wrote {out / 'report.html'} ({time.perf_counter() - start:.1f} s)")
