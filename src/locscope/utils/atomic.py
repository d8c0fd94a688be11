"""Atomic writes: write to a temporary file in the destination folder, then rename over the target.

A reader never sees a half-written checkpoint, store manifest or report: ``os.replace`` is atomic on POSIX
when source and target are on the same file system, which a sibling temp file guarantees.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it to ``target``, on error delete it.

    Works for files and directories (the caller creates whichever it needs at the yielded path).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix + ".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()  # let the caller create a file or a directory
    try:
        yield tmp
        if target.is_dir() and tmp.is_dir():
            replace_directory(tmp, target)
        else:
            os.replace(tmp, target)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        raise


def replace_directory(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Rename directory ``source`` to ``target``; an existing ``target`` is moved aside first and removed only after
    the new one is in place, so ``target`` is never half-removed."""
    source, target = Path(source), Path(target)
    if not target.exists():
        os.replace(source, target)
        return
    backup = target.with_name(f".{target.name}.old")
    if backup.exists():
        shutil.rmtree(backup)
    os.replace(target, backup)
    os.replace(source, target)
    shutil.rmtree(backup)


def write_bytes(target: str | os.PathLike, data: bytes) -> None:
    """Atomically write ``data`` to ``target``."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text(target: str | os.PathLike, text: str) -> None:
    """Atomically write ``text`` (UTF-8) to ``target``."""
    write_bytes(target, text.encode("utf-8"))


def write_json(target: str | os.PathLike, obj: Any, indent: int = 2) -> None:
    """Atomically write ``obj`` as JSON to ``target``."""
    write_text(target, json.dumps(obj, indent=indent, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
