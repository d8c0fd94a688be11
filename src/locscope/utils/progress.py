"""Rich progress bars for long work (to stderr, so stdout stays parseable)."""

from __future__ import annotations

from typing import Iterable, Iterator, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")
_console = Console(stderr=True)


def progress_bar() -> Progress:
    """A configured :class:`rich.progress.Progress` writing to stderr."""
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), console=_console, transient=False,
    )


def track(iterable: Iterable[T], description: str, total: int | None = None, enabled: bool = True) -> Iterator[T]:
    """Iterate ``iterable`` showing a progress bar (``enabled=False`` for quiet library use)."""
    if not enabled:
        yield from iterable
        return
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with progress_bar() as progress:
        task = progress.add_task(description, total=total)
        for item in iterable:
            yield item
            progress.advance(task)


def note(message: str, enabled: bool = True) -> None:
    """Print a one-line status message to stderr (above a live progress bar, if one is showing)."""
    if enabled:
        _console.print(message, highlight=False)
