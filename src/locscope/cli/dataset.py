"""``locscope dataset build | info | export-lmdb | import-lmdb``: the chunked dataset store from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from locscope.cli.app import app
from locscope.cli.options import OverwriteOption, SeedOption
from locscope.errors import InputError

dataset_app = typer.Typer(help="Build, inspect, export and import dataset stores.", no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")


def _fractions(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise InputError(f"--split {text!r}: need three comma-separated fractions, e.g. 0.8,0.1,0.1")
    return values  # type: ignore[return-value]


@dataset_app.command("build")
def build_command(
    manifest: Path = typer.Argument(..., help="CSV / TSV / YAML manifest (one item per row; see README 'Datasets')."),
    out: Path = typer.Option(..., "--out", help="Store directory to write (atomic; re-run to resume)."),
    overwrite: bool = OverwriteOption,
    sequences: Optional[Path] = typer.Option(None, "--sequences", help="FASTA / CSV for the manifest's sequence_id column."),
    channels: Optional[str] = typer.Option(None, "--channels", help="Channels to store, e.g. protein,nucleus,er,microtubules."),
    dtype: str = typer.Option("auto", "--dtype", help="auto | uint8 | uint16 | float32 (auto keeps the source depth)."),
    split: str = typer.Option("0.8,0.1,0.1", "--split", help="Train,val,test fractions of items (split by protein)."),
    seed: int = SeedOption,
    max_length: int = typer.Option(2048, "--max-length", help="Longest accepted sequence."),
    truncate: bool = typer.Option(False, "--truncate", help="Cut longer sequences instead of failing."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Read every item of MANIFEST and write a chunked dataset store."""
    from locscope.io.manifest import build_store_from_manifest

    channel_list = [c.strip() for c in channels.split(",") if c.strip()] if channels else None
    store = build_store_from_manifest(manifest, out, sequences=sequences, channels=channel_list, image_dtype=dtype,
                                      split_fractions=_fractions(split), seed=seed, max_length=max_length,
                                      truncate=truncate, progress=not quiet, overwrite=overwrite)
    sizes = store.info["split_sizes"]
    typer.echo(f"wrote {store.path}: {len(store)} items, channels {', '.join(store.channels)}, {store.image_dtype} "
               f"{store.image_shape[0]}x{store.image_shape[1]}; train/val/test {sizes['train']}/{sizes['val']}/{sizes['test']}")


@dataset_app.command("info")
def info_command(
    store_path: Path = typer.Argument(..., metavar="STORE", help="A dataset store directory."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Describe a store: items, channels, dtype, splits by protein, label counts, attributes."""
    from locscope.data.store import Store, store_summary

    summary = store_summary(Store.open(store_path))
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=str))
        return
    console = Console()
    height, width = summary["image_shape"]
    console.print(f"[bold]{summary['path']}[/bold]  {summary['n_items']} items, {summary['n_proteins']} proteins, "
                  f"{summary['image_dtype']} {height} x {width}", highlight=False, soft_wrap=True)
    console.print(f"channels: {', '.join(summary['channels'])}"
                  + (f"; masks: {', '.join(summary['mask_names'])}" if summary["mask_names"] else ""), highlight=False)
    table = Table(show_edge=False)
    for column in ("split", "items", "proteins"):
        table.add_column(column)
    for name, sizes in summary["splits"].items():
        table.add_row(name, str(sizes["items"]), str(sizes["proteins"]))
    console.print(table)
    for level, counts in summary["labels"].items():
        shown = ", ".join(f"{name} {n}" for name, n in list(counts.items())[:8])
        more = f" (+{len(counts) - 8} more)" if len(counts) > 8 else ""
        console.print(f"labels {level}: {shown}{more}", highlight=False, soft_wrap=True)
    if summary["attrs"]:
        console.print(f"attrs: {json.dumps(summary['attrs'], default=str)}", highlight=False, soft_wrap=True)


@dataset_app.command("export-lmdb")
def export_command(
    store_path: Path = typer.Argument(..., metavar="STORE", help="A dataset store directory."),
    out: Path = typer.Option(..., "--out", help="Output directory in the CELL-Diff LMDB layout (new or empty)."),
    overwrite: bool = OverwriteOption,
    bit_depth: Optional[int] = typer.Option(None, "--bit-depth", help="8 (CELL-Diff's loader) or 16 (lossless); "
                                            "default 16 for uint16 stores, else 8."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Write a store in the CELL-Diff LMDB layout ({split}_keys.json + pickled dicts of PNG bytes)."""
    from locscope.io.celldiff_lmdb import export_store_to_lmdb

    path = export_store_to_lmdb(store_path, out, bit_depth=bit_depth, progress=not quiet, overwrite=overwrite)
    counts = {p.name[: -len("_keys.json")]: len(json.loads(p.read_text())) for p in sorted(path.glob("*_keys.json"))}
    typer.echo(f"wrote {path}: " + ", ".join(f"{name} {n}" for name, n in counts.items()))


@dataset_app.command("import-lmdb")
def import_command(
    lmdb_dir: Path = typer.Argument(..., metavar="DIR", help="A CELL-Diff LMDB directory."),
    out: Path = typer.Option(..., "--out", help="Store directory to write."),
    overwrite: bool = OverwriteOption,
    split: Optional[str] = typer.Option(None, "--split", help="Import only the keys of {split}_keys.json."),
    new_splits: bool = typer.Option(False, "--new-splits", help="Draw new splits by protein instead of keeping the LMDB's."),
    seed: int = SeedOption,
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Read a CELL-Diff LMDB safely (plain values only, never code) into a dataset store."""
    from locscope.io.celldiff_lmdb import import_lmdb_to_store

    store = import_lmdb_to_store(lmdb_dir, out, split=split, keep_splits=not new_splits, seed=seed, progress=not quiet,
                                 overwrite=overwrite)
    typer.echo(f"wrote {store.path}: {len(store)} items, channels {', '.join(store.channels)}, {store.image_dtype}")
