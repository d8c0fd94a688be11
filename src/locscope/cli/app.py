"""The Typer application object and its global options (``--version``, ``--debug``); each command module attaches
its command to ``app``."""

from __future__ import annotations

from typing import Optional

import typer

from locscope import __version__

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
