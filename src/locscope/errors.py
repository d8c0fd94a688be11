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


class ArgumentError(InputError):
    """A library function's argument is invalid. The message starts with the Python argument's name
    (``ArgumentError("batch_size", "must be at least 1; got 0")`` -> ``batch_size must be at least 1; got 0``); the
    CLI names the command's flag instead (``--batch-size must be at least 1; got 0``).

    ``mentions`` lists further argument names the message refers to as whole words (``ArgumentError("image", "needs
    landmarks", mentions=("landmarks",))``); the CLI writes their flags too (``--image needs --landmarks``).
    """

    def __init__(self, argument: str, message: str, mentions: tuple[str, ...] = ()) -> None:
        super().__init__(f"{argument}{'' if message[:1] in (':', '=') else ' '}{message}")
        self.argument = argument
        self.mentions = tuple(mentions)


def check_at_least(argument: str, value: int | float | None, minimum: int | float = 1) -> None:
    """Raise ``ArgumentError(argument, "<value>: must be >= <minimum>")`` when ``value`` is below ``minimum`` (None
    passes: an unset option)."""
    if value is not None and value < minimum:
        raise ArgumentError(argument, f"{value}: must be >= {minimum}")


class CheckpointError(LocscopeError):
    """A checkpoint does not match the model: missing, unexpected or misshaped keys."""


class TrainingError(LocscopeError):
    """A training run cannot go on, e.g. its loss or gradients are no longer finite; the run stops before writing
    anything the message does not name."""


def one_line(message: str) -> str:
    """Collapse a message to a single line (errors are printed as exactly one line)."""
    return " ".join(str(message).split())
