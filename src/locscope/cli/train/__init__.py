"""``locscope train MODEL``: the ``train`` command group; each model's training command is a module of this package."""

from __future__ import annotations

import typer

from locscope.cli.app import app

train_app = typer.Typer(help="Train a model (celldiff, subcell, ...).", no_args_is_help=True)
app.add_typer(train_app, name="train")
