"""What every page of the web app shares: one-line refusals, job folders, uploads stored under safe names."""

from __future__ import annotations

import os
import re
import shutil
import threading
import uuid
from pathlib import Path
from typing import Sequence

from locscope.errors import ArgumentError, LocscopeError, one_line

MAX_UPLOAD_BYTES = 64 * 1024 * 1024
# Python argument names of the pipelines -> the form fields that set them (errors name the field).
FIELDS = {"sequences": "sequence", "landmarks": "landmarks", "model": "model", "samples": "samples",
          "steps": "steps", "guidance": "guidance", "seed": "seed", "method": "method", "target": "target",
          "template": "template", "candidates": "candidates", "terminus": "terminus",
          "terminus_length": "terminus_length", "images": "images", "channel_order": "channel_order",
          "top": "top", "brightfield": "brightfield", "class_name": "class_name",
          "classifier_scale": "classifier_scale", "sampler": "sampler"}
_JOB = re.compile(r"^[0-9a-f]{32}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class BadRequest(Exception):
    """A request the app refuses (status 400) with a one-line message."""


def field_message(err: LocscopeError) -> str:
    """A library error as the page says it: an :class:`~locscope.errors.ArgumentError` names the form field."""
    message = one_line(str(err))
    if isinstance(err, ArgumentError) and err.argument in FIELDS and message.startswith(err.argument):
        message = f"{FIELDS[err.argument]}{message[len(err.argument):]}"
    return message


def safe_file_name(name: str | None, index: int, stem: str = "landmark") -> str:
    """The base name of an uploaded file with anything but letters, digits, ``.``, ``_`` and ``-`` replaced
    (``../../x y.png`` -> ``x_y.png``); an empty or dot-only name becomes ``<stem>_<index>``."""
    base = _UNSAFE.sub("_", Path(str(name or "")).name).strip("._")
    return base or f"{stem}_{index}"


def save_uploads(uploads: Sequence, folder: Path, field: str, max_files: int, what: str) -> list[Path]:
    """Store uploaded files (FastAPI ``UploadFile``s with a file name) in ``folder`` under :func:`safe_file_name`.

    Raises
    ------
    BadRequest
        More than ``max_files`` files (``what`` says which), a file larger than :data:`MAX_UPLOAD_BYTES`, or two
        files of the same safe name; each names the form ``field``.
    """
    if len(uploads) > max_files:
        raise BadRequest(f"{field}: at most {max_files} files ({what}); {len(uploads)} given")
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for k, upload in enumerate(uploads):
        data = upload.file.read(MAX_UPLOAD_BYTES + 1)
        name = safe_file_name(upload.filename, k, stem=field)
        if len(data) > MAX_UPLOAD_BYTES:
            raise BadRequest(f"{field}: {name} is larger than {MAX_UPLOAD_BYTES // 2 ** 20} MB")
        path = folder / name
        if path in paths:
            raise BadRequest(f"{field}: two files named {path.name}")
        path.write_bytes(data)
        paths.append(path)
    return paths


class Jobs:
    """Job folders under ``root``: created per request, served read-only, the oldest removed beyond ``keep``."""

    def __init__(self, root: Path, keep: int) -> None:
        self.root, self.keep = root, keep
        self.order: list[str] = []
        self.lock = threading.Lock()

    def new(self) -> tuple[str, Path]:
        job = uuid.uuid4().hex
        folder = self.root / job
        folder.mkdir(parents=True)
        with self.lock:
            self.order.append(job)
            while len(self.order) > self.keep:
                shutil.rmtree(self.root / self.order.pop(0), ignore_errors=True)
        return job, folder

    def public(self, message: str) -> str:
        """``message`` without this server's job folders: ``<root>/<job>/`` and an upload folder after it
        (``inputs/``, ``landmarks/``) are removed, so errors name uploaded files as the user named them."""
        return re.sub(re.escape(f"{self.root}{os.sep}") + r"[0-9a-f]{32}" + re.escape(os.sep)
                      + r"(?:(?:inputs|landmarks)" + re.escape(os.sep) + r")?", "", message)

    def file(self, job: str, relative: str) -> Path | None:
        """The file ``relative`` inside job ``job``, or None (unknown job, a path leaving the folder, no file)."""
        if not _JOB.match(job):
            return None
        folder = (self.root / job).resolve()
        path = (folder / relative).resolve()
        if not path.is_relative_to(folder) or not path.is_file():
            return None
        return path


__all__ = ["BadRequest", "FIELDS", "Jobs", "MAX_UPLOAD_BYTES", "field_message", "safe_file_name", "save_uploads"]
