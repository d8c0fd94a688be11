"""Where commands write: one output-folder policy, output files, training run folders and the store build lock.

The policy (every command with ``--out``; README "User errors", docs/architecture.md):

- ``--out`` that does not exist, or an empty folder: written.
- ``--out`` that is a previous output of the same kind (it holds the marker :data:`MARKER` naming the command, or the
  files that kind of output always holds): refused unless ``overwrite=True`` (``--overwrite``), which writes the new
  output beside it and then swaps the two, so the old output stays whole until the new one is complete.
- any other non-empty folder: refused, with or without ``overwrite``; nothing in it is read, changed or deleted.
- ``--out`` naming a file (or below a file): a one-line :class:`~locscope.errors.InputError`.

Training runs are resumable folders (:func:`check_run_folder`): a previous run is continued with ``--resume``, never
silently restarted; anything else non-empty is refused. Output files (``localize --out result.csv``) follow
:func:`check_output_file`.

Builds that take long (dataset stores) hold :func:`exclusive_lock` on a lock file beside their partial folder, so two
runs can never write into one partial folder.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import time
from pathlib import Path
from typing import Iterator, Sequence

from locscope import __version__
from locscope.errors import InputError
from locscope.utils.atomic import atomic_path

MARKER = ".locscope-output.json"


def written_by(path: str | os.PathLike) -> str | None:
    """The command named by the output marker in folder ``path``, or None."""
    try:
        return str(json.loads((Path(path) / MARKER).read_text()).get("command"))
    except (OSError, ValueError, AttributeError):
        return None


def check_not_below_file(path: Path, option: str = "--out") -> None:
    """InputError when a parent of ``path`` is a file (a folder cannot be made there)."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{option} {path}: {parent} is a file, not a folder")
            return


def check_output_folder(path: str | os.PathLike, command: str, *, overwrite: bool = False,
                        known_files: Sequence[str] = (), option: str = "--out") -> Path:
    """Apply the output-folder policy (module docstring) to ``path`` for ``command``; return ``path`` as a Path.

    ``known_files`` are files every output of ``command`` holds: a folder holding all of them (written before the
    marker existed) counts as a previous output too.

    Raises
    ------
    InputError
        ``path`` is a file or lies below one; a non-empty folder that is not a previous output of ``command``; a
        previous output without ``overwrite``.
    """
    path = Path(path)
    check_not_below_file(path, option)
    if path.exists() and not path.is_dir():
        raise InputError(f"{option} {path}: is a file; give a folder (new or empty)")
    if not path.exists() or not any(path.iterdir()):
        return path
    previous = written_by(path) == command or (
        written_by(path) is None and bool(known_files) and all((path / name).exists() for name in known_files))
    if not previous:
        raise InputError(f"{option} {path}: folder is not empty and is not an earlier `locscope {command}` output; "
                         f"nothing was written (choose a new or empty folder)")
    if not overwrite:
        raise InputError(f"{option} {path}: holds an earlier `locscope {command}` output; pass --overwrite to "
                         f"replace it or choose another folder")
    return path


@contextlib.contextmanager
def output_folder(path: str | os.PathLike, command: str, *, overwrite: bool = False,
                  known_files: Sequence[str] = (), option: str = "--out") -> Iterator[Path]:
    """Check ``path`` (:func:`check_output_folder`), yield a fresh folder beside it to write the output into, and on
    success mark it as ``command``'s output and swap it into place; on error it is deleted and ``path`` is unchanged.
    """
    path = check_output_folder(path, command, overwrite=overwrite, known_files=known_files, option=option)
    path = path.resolve()  # `--out .` has a real parent; a symlinked folder is swapped at its target, the link stays
    with atomic_path(path) as work:
        work.mkdir()
        yield work
        (work / MARKER).write_text(json.dumps({"command": command, "locscope_version": __version__,
                                               "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
                                   + "\n")


def check_output_file(path: str | os.PathLike, *, overwrite: bool = False, option: str = "--out") -> Path:
    """An output file: refused when it is a folder (or below a file); an existing file needs ``overwrite``."""
    path = Path(path)
    check_not_below_file(path, option)
    if path.is_dir():
        raise InputError(f"{option} {path}: is a folder; give a file name")
    if path.exists() and not overwrite:
        raise InputError(f"{option} {path}: file exists; pass --overwrite to replace it or choose another file")
    return path


def check_run_folder(path: str | os.PathLike, *, resume: bool, run_files: Sequence[str],
                     option: str = "--out") -> Path:
    """A training run folder: ``resume`` needs a previous run (``run_files`` present); without it, ``path`` must be
    new or empty (a previous run is continued with --resume, never silently restarted).

    Processes a distributed launcher starts for ranks other than 0 (environment ``LOCAL_RANK`` / ``RANK`` set and not
    0) skip the check: rank 0 checked the folder and has started writing into it.
    """
    path = Path(path)
    if os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("RANK", "0") != "0":
        return path
    check_not_below_file(path, option)
    if path.exists() and not path.is_dir():
        raise InputError(f"{option} {path}: is a file; give a folder (new or empty)")
    if resume or not path.exists() or not any(path.iterdir()):
        return path
    if any((path / name).exists() for name in run_files):
        raise InputError(f"{option} {path}: already holds a run; pass --resume to continue it or choose another folder")
    raise InputError(f"{option} {path}: folder is not empty and holds no training run; nothing was written (choose "
                     f"a new or empty folder)")


@contextlib.contextmanager
def exclusive_lock(lock_path: str | os.PathLike, what: str) -> Iterator[Path]:
    """Hold an exclusive, non-blocking lock on ``lock_path`` (created beside the work it guards) while the block runs.

    A second holder fails at once with an :class:`InputError` naming ``what``. The file is removed on release; a
    process that opened it just before the removal notices (its file is no longer the one at ``lock_path``) and
    retries, so two processes never both hold it.
    """
    import fcntl

    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EAGAIN, errno.EACCES):
                raise InputError(f"{what}: another run is writing it (lock {lock_path} is held); wait for that run "
                                 f"to finish or choose another --out") from None
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the file was removed by the previous holder after we opened it: take the new one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield lock_path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_path)
        os.close(fd)
