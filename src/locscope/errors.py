"""User-facing errors.

Every error a user can cause (bad file, bad record, bad option) is raised as a :class:`LocscopeError`
whose message is one line naming the file / record / position / field. The CLI prints that line and
exits with code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations


class LocscopeError(Exception):
    """Base class of errors caused by user input; the CLI reports them in one line (exit code 2)."""

    exit_code = 2


class InputError(LocscopeError, ValueError):
    """An input file, record or argument is invalid."""


class CheckpointError(LocscopeError):
    """A checkpoint does not match the model: missing, unexpected or misshaped keys."""


def one_line(message: str) -> str:
    """Collapse a message to a single line (errors are printed as exactly one line)."""
    return " ".join(str(message).split())
