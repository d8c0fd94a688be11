"""The one mapping from record / cell ids to file names (every command that names files after ids uses it).

Rule (docs/architecture.md): an id made only of ASCII letters, digits, ``-``, ``_`` and ``.``, not starting with
``.``, and at most :data:`MAX_KEPT` characters long is its own file name. Any other id becomes its cleaned form (every
other character -> ``_``, leading dots -> ``_``, cut to :data:`MAX_KEPT` characters) plus ``~`` and the first 12 hex
digits of the SHA-256 of the id. ``~`` never appears in a kept id, so a kept id and a cleaned one never meet, and two
cleaned ids meet only if their hashes collide (``a/b`` -> ``a_b~...``, distinct from ``a_b``). The result is never
empty, ``.``, ``..``, absolute, or a path with a separator.
"""

from __future__ import annotations

import hashlib
import re

MAX_KEPT = 80
_KEPT = re.compile(r"[A-Za-z0-9_.-]+")
_OTHER = re.compile(r"[^A-Za-z0-9_.-]")


def file_name_for_id(record_id: str) -> str:
    """A file (or folder) name for ``record_id``: the id itself when it is safe, else a cleaned name + ``~`` + hash.

    Examples
    --------
    >>> file_name_for_id("P04637")
    'P04637'
    >>> file_name_for_id("a/b").startswith("a_b~")
    True
    """
    text = str(record_id)
    if _KEPT.fullmatch(text) and not text.startswith(".") and len(text) <= MAX_KEPT:
        return text
    cleaned = _OTHER.sub("_", text)
    cleaned = "_" * (len(cleaned) - len(cleaned.lstrip("."))) + cleaned.lstrip(".")
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{cleaned[:MAX_KEPT]}~{digest}"
