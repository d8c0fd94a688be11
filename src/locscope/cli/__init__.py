"""Command-line interface. ``cli`` only parses and calls pipelines; each command lives in its own module."""

from __future__ import annotations

import os
import sys

from rich.console import Console

from locscope.cli.app import app, state
from locscope.errors import LocscopeError, one_line

import importlib
import pkgutil

# Each ``locscope/cli/*_cmd.py`` module attaches its commands to ``app`` when imported; importing them in name
# order keeps ``--help`` stable and lets command modules be added without editing this file.
for _module in sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name.endswith("_cmd")):
    importlib.import_module(f"{__name__}.{_module}")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors print one line to stderr and exit with code 2."""
    debug = state["debug"] or "--debug" in (argv if argv is not None else sys.argv) or os.environ.get("LOCSCOPE_DEBUG")
    try:
        app(args=argv, prog_name="locscope")
    except LocscopeError as err:
        if debug:
            raise
        Console(stderr=True).print(f"[red]error:[/red] {one_line(str(err))}", highlight=False, soft_wrap=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        Console(stderr=True).print("interrupted")
        sys.exit(130)


__all__ = ["app", "main"]
