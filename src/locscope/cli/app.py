"""The Typer application object and global options; command modules attach their commands to ``app``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from locscope import __version__
from locscope.errors import InputError

app = typer.Typer(
    name="locscope",
    help="locscope: a virtual microscope for protein localization.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # user errors are one line; --debug re-raises with a plain traceback
    add_completion=False,
)

state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"locscope {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Optional[bool] = typer.Option(None, "--version", callback=_version, is_eager=True, help="Print the version."),
    debug: bool = typer.Option(False, "--debug", help="Show a full traceback on errors."),
) -> None:
    """locscope: a virtual microscope for protein localization."""
    state["debug"] = debug


SeedOption = typer.Option(0, "--seed", help="Random seed (results are reproducible for a seed).")
DeviceOption = typer.Option("auto", "--device", help="auto | cpu | cuda")
MaxLengthOption = typer.Option(2048, "--max-length", help="Longest accepted sequence (longer ones fail unless "
                                                        "--truncate).")
TruncateOption = typer.Option(False, "--truncate", help="Cut sequences longer than --max-length, keeping both termini "
                                                        "(the first and last halves); the cut is reported.")
OverwriteOption = typer.Option(False, "--overwrite", help="Replace an earlier output of this command in --out (the new one is written beside it, then swapped in); other non-empty folders are always refused.")

LANDMARKS_HOW = "--landmarks a.png b.png c.png (one option, several files), a repeated --landmarks, or a folder"
# the words a shell glob puts after "--landmarks first.png" (only the first is the option's value)
MoreLandmarks = typer.Argument(None, hidden=True, metavar="LANDMARK_FILES", help="Further files after --landmarks.")


def landmark_files(option: Optional[list[Path]], extra: Optional[list[Path]],
                   required: bool = True) -> list[Path]:
    """The landmark files of ``--landmarks a b c``: the option's values plus the words after it; files without the
    option (or none when ``required``) are an error saying how to give them."""
    if extra and not option:
        raise InputError(f"{extra[0]}: landmark files are given with --landmarks; {LANDMARKS_HOW}")
    if required and not option:
        raise InputError(f"give landmark images: {LANDMARKS_HOW}")
    return [*(option or []), *(extra or [])]
