"""Command-line interface: one module per command (``cli/generate.py`` is ``locscope generate``,
``cli/train/celldiff.py`` is ``locscope train celldiff``); a command parses its options and calls a
pipeline function."""

from __future__ import annotations

import os
import re
import sys

from rich.console import Console

from locscope.cli.app import app, state
from locscope.errors import ArgumentError, LocscopeError, one_line

# One module per command; importing a module attaches its command to ``app`` (this order is the order of --help).
from locscope.cli import (  # noqa: F401  (imported for their commands)
    generate, demo, design, localize, explain, evaluate, inspect, simulate, stain, embed, classify, cache, serve,
)
from locscope.cli.train import (  # noqa: F401
    celldiff, celldiff_data, celle2, designer, latent_autoencoder, latent, localizer, readout, stain as train_stain,
    stain_classifier, subcell, fraction_head, condition_prior,
)
from locscope.cli import dataset  # noqa: F401


def option_flags(argv: list[str]) -> dict[str, str]:
    """The options of the command ``argv`` invokes: Python parameter name -> its long flag (``batch_size`` ->
    ``--batch-size``)."""
    import typer.main

    command = typer.main.get_command(app)
    for token in argv:
        if token in getattr(command, "commands", {}):
            command = command.commands[token]
    return {p.name: max(p.opts, key=len) for p in command.params
            if getattr(p, "param_type_name", "") == "option" and p.name and p.opts}


def cli_message(err: LocscopeError, argv: list[str]) -> str:
    """A library error as the command line says it: an :class:`~locscope.errors.ArgumentError` names the invoked
    command's flags instead of the Python arguments (``batch_size must be ...`` -> ``--batch-size must be ...``; the
    names in ``err.mentions`` wherever they occur as words)."""
    message = one_line(str(err))
    if not isinstance(err, ArgumentError):
        return message
    flags = option_flags(argv)
    for name in err.mentions:
        if name in flags:
            message = re.sub(rf"(?<![\w.-]){re.escape(name)}(?![\w-])", flags[name], message)
    if message.startswith(err.argument) and err.argument in flags:
        message = flags[err.argument] + message[len(err.argument):]
    return message


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors print one line to stderr and exit with code 2."""
    args = list(argv if argv is not None else sys.argv[1:])
    debug = state["debug"] or "--debug" in args or os.environ.get("LOCSCOPE_DEBUG")
    try:
        app(args=argv, prog_name="locscope")
    except LocscopeError as err:
        if debug:
            raise
        message = cli_message(err, args)
        Console(stderr=True).print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
        sys.exit(err.exit_code)
    except OSError as err:  # a file the user named cannot be read or written (permissions, disk full, ...)
        if debug or err.errno is None:
            raise
        where = f"{err.filename}: " if err.filename else ""
        Console(stderr=True).print(f"[red]error:[/red] {where}{err.strerror or one_line(str(err))}", highlight=False,
                                   soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        Console(stderr=True).print("interrupted")
        sys.exit(130)


__all__ = ["app", "main"]
