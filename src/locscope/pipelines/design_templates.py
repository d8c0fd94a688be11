"""Design templates and results shared by every family's ``design``: parse a template with ``<mask:N>`` spans into
token ids, and the ranked-candidate records written to ``candidates.fasta`` / ``summary.json``."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from locscope.errors import ArgumentError, InputError

MAX_DESIGN_LENGTH = 2048
DESIGN_FILES = ("candidates.fasta", "summary.json")  # every design output holds them


@dataclass
class Candidate:
    """One designed sequence with its scores."""

    rank: int
    sequence: str
    score: float
    level3: dict[str, float]
    top_level3: str
    grammar_call: str
    grammar_compartments: dict[str, float]
    image: np.ndarray | None = field(default=None, repr=False)


@dataclass
class DesignResult:
    """Ranked candidates and decoding statistics."""

    candidates: list[Candidate]
    template: str
    target: str | None
    decoder: str
    passes_per_candidate: float
    decode_seconds_per_candidate: float
    score_seconds_per_candidate: float
    score_method: str
    refine_rounds: int = 0
    best_head_score_per_round: list[float] = field(default_factory=list)
    proposer: str = "celldiff"
    image_compartments: dict[str, float] = field(default_factory=dict)


def build_template(template: str | None = None, length: int | None = None, terminus: str | None = None,
                   terminus_length: int = 15) -> list[int]:
    """Token ids of the design template.

    Parameters
    ----------
    template : str, optional
        Residues with ``<mask>`` / ``<mask:N>`` spans to design, e.g. ``"MVSKGEE<mask:15>"``.
    length : int, optional
        Design a whole sequence of this many residues (used when ``template`` is absent).
    terminus : {'N', 'C'}, optional
        Add ``terminus_length`` masked residues before (``N``) or after (``C``) the template.
    terminus_length : int

    Raises
    ------
    InputError
        No template and no length; a length of 0 or more than 2048; a template with nothing to design; a bad residue.
    """
    from locscope.encoders.protein import MASK_ID, encode_sequence

    if template is None:
        if length is None:
            raise ArgumentError("length", "or template: give length L (a whole sequence to design) or template SEQ "
                                          "(with <mask> spans to infill)", mentions=("length", "template"))
        if not 1 <= length <= MAX_DESIGN_LENGTH:
            raise ArgumentError("length", f"{length}: must be between 1 and {MAX_DESIGN_LENGTH}")
        ids = [MASK_ID] * length
    else:
        from locscope.io.sequences import validate_template

        # the validator every sequence goes through (same letters, trailing '*', messages); the length is checked below
        try:
            text = validate_template(template, "template", max_length=None)
        except InputError as err:  # the sequence rules' message starts with the source: "template: position 9: ..."
            raise ArgumentError("template", str(err).removeprefix("template")) from None
        ids = encode_sequence(text)
    if terminus is not None:
        if terminus not in ("N", "C"):
            raise ArgumentError("terminus", f"{terminus!r}: accepted values are N, C")
        if terminus_length < 1:
            raise ArgumentError("terminus_length", f"{terminus_length}: must be >= 1")
        ids = [MASK_ID] * terminus_length + ids if terminus == "N" else ids + [MASK_ID] * terminus_length
    if MASK_ID not in ids:
        raise ArgumentError("template", "has no <mask> or <mask:N> span and no terminus is given: nothing to design",
                            mentions=("terminus",))
    if not 1 <= len(ids) <= MAX_DESIGN_LENGTH:
        raise InputError(f"design length {len(ids)}: must be between 1 and {MAX_DESIGN_LENGTH}")
    return ids


def template_text(ids: list[int]) -> str:
    """Residue letters of token ids (``<mask>`` for masked positions)."""
    from locscope.encoders.protein import decode_tokens

    return decode_tokens(ids)
