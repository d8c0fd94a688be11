"""``locscope inspect PATH...``: print what each reader sees (format, shape, channels, dtype, range / records)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.console import Console
from rich.table import Table

from locscope.cli.app import app
from locscope.io.sequences import DEFAULT_MAX_LENGTH
from locscope.io.summary import inspect_paths

_SHOWN_RECORDS = 10


@app.command("inspect")
def inspect_command(
    paths: List[Path] = typer.Argument(..., help="Image files / CELL-Diff folders, FASTA / CSV / TSV sequence files, label tables, CELL-Diff LMDB dirs."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
    max_length: int = typer.Option(DEFAULT_MAX_LENGTH, "--max-length", help="Longest accepted sequence."),
    truncate: bool = typer.Option(False, "--truncate", help="Cut longer sequences instead of failing."),
    channels: Optional[str] = typer.Option(None, "--channels", help="Channel names in file order, e.g. microtubules,nucleus,er."),
    layout: Optional[str] = typer.Option(None, "--layout", help="Force a reader: hpa-channel, display-rgb, celldiff-sample, "
                                         "micromanager, landmark-stack, cytoself-npy, generic."),
) -> None:
    """Read files with locscope's readers and print what they see; invalid files fail with a one-line error."""
    channel_order = [c.strip() for c in channels.split(",") if c.strip()] if channels else None
    summaries = inspect_paths(paths, max_length=max_length, truncate=truncate, channel_order=channel_order, layout=layout)
    if as_json:
        typer.echo(json.dumps(summaries, indent=2, default=str))
        return
    console = Console()
    for summary in summaries:
        printers = {"image": _print_image, "crops": _print_crops, "sequences": _print_sequences, "labels": _print_labels,
                    "lmdb": _print_lmdb}
        printers[summary["kind"]](console, summary)


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _print_image(console: Console, s: dict[str, Any]) -> None:
    height, width = s["shape"]
    title = f"[bold]{s['path']}[/bold]  {s['format']}  {height} x {width}"
    if s.get("pixel_size_nm"):
        title += f"  {s['pixel_size_nm']:.1f} nm/px"
    if s.get("z_projected") or s.get("z_slices"):
        title += f"  z max-projection of {s.get('z_projected') or s.get('z_slices')} slices"
    if "index" in s:
        title += f"  crop {s['index']} of {s['n_crops']}"
    console.print(title, soft_wrap=True, highlight=False)
    files = s.get("files", {})
    identified = s.get("identified_by", {})
    sources = {c["name"]: files.get(c["name"]) or identified.get(c["name"]) or s.get("channel_source", "")
               for c in s["channels"]}
    _channel_table(console, s["channels"], sources)


def _print_crops(console: Console, s: dict[str, Any]) -> None:
    shape = " x ".join(map(str, s["shape"]))
    extra = f", extra arrays {', '.join(s['extra_arrays'])}" if s["extra_arrays"] else ""
    console.print(f"[bold]{s['path']}[/bold]  {s['format']}  {shape} crops, {s['n_labels']} label rows{extra}",
                  soft_wrap=True, highlight=False)
    _channel_table(console, s["channels"])


def _channel_table(console: Console, channels: list[dict[str, Any]], sources: dict[str, str] | None = None) -> None:
    table = Table(show_edge=False)
    for column in ("channel", "dtype", "min", "max", "mean") + (("from",) if sources is not None else ()):
        table.add_column(column)
    for c in channels:
        row = [c["name"], c["dtype"], _fmt(c["min"]), _fmt(c["max"]), _fmt(c["mean"])]
        table.add_row(*row, *([sources.get(c["name"], "")] if sources is not None else []))
    console.print(table)


def _print_sequences(console: Console, s: dict[str, Any]) -> None:
    title = (f"[bold]{s['path']}[/bold]  {s['format']}  {s['n_records']} records, length {s['min_length']}-"
             f"{s['max_length']} (median {s['median_length']:.0f})")
    if s["n_truncated"]:
        title += f", {s['n_truncated']} truncated to {s['length_limit']}"
    if s["extended_residues"]:
        title += ", extended residues " + " ".join(f"{k}:{v}" for k, v in sorted(s["extended_residues"].items()))
    console.print(title, soft_wrap=True, highlight=False)
    table = Table(show_edge=False)
    for column in ("id", "length", "labels", "membrane"):
        table.add_column(column)
    for r in s["records"][:_SHOWN_RECORDS]:
        membrane = "" if r["membrane"] is None else ("yes" if r["membrane"] else "no")
        table.add_row(r["id"], str(r["length"]), ";".join(r["labels"]), membrane)
    if s["n_records"] > _SHOWN_RECORDS:
        table.add_row(f"... {s['n_records'] - _SHOWN_RECORDS} more", "", "", "")
    console.print(table)


def _print_labels(console: Console, s: dict[str, Any]) -> None:
    title = (f"[bold]{s['path']}[/bold]  {s['format']} label table  {s['n_records']} proteins "
             f"({s['n_without_level1']} without a level-1 class)")
    console.print(title, soft_wrap=True, highlight=False)
    table = Table(show_edge=False)
    table.add_column("level1")
    table.add_column("proteins")
    for name, count in s["level1_counts"].items():
        table.add_row(name, str(count))
    console.print(table)


def _print_lmdb(console: Console, s: dict[str, Any]) -> None:
    splits = ", ".join(f"{name} {count}" for name, count in s["splits"].items())
    console.print(f"[bold]{s['path']}[/bold]  {s['format']}  {s['n_items']} items ({splits}), sequence length "
                  f"{s['min_sequence_length']}-{s['max_sequence_length']}; first item:", soft_wrap=True, highlight=False)
    table = Table(show_edge=False)
    for column in ("channel", "dtype", "shape", "min", "max"):
        table.add_column(column)
    for c in s["channels"]:
        table.add_row(c["name"], c["dtype"], " x ".join(map(str, c["shape"])), _fmt(c["min"]), _fmt(c["max"]))
    console.print(table)
