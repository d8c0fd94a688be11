"""Sequence helpers shared by the readers and the encoders (the lowest layer, so both may use them)."""

from __future__ import annotations

from typing import Any, Sequence


def keep_termini(seq: Sequence[Any], max_length: int) -> Any:
    """The first ``ceil(max_length / 2)`` and last ``floor(max_length / 2)`` items of a longer sequence (string or
    token list): the one cropping rule of ``--truncate`` and of models that read at most ``max_length`` residues
    (sorting signals sit at both ends)."""
    if len(seq) <= max_length:
        return seq
    head = (max_length + 1) // 2
    return seq[:head] + seq[len(seq) - (max_length - head):]
