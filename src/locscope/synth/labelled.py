"""Label-faithful rendering: real proteins with annotated compartments -> cells with the protein where the annotation
says, so real sequences are paired with images (models then learn real sequence -> localization biology).

Fractions follow the annotation's grades when the table has OpenCell grades (grade 3 "prominent" weighs 1, grade 2
0.5, grade 1 0.25; level-1 classes without a grade weigh 0.5): a protein annotated ``nucleoplasm`` (grade 3) and
``cytosol`` (grade 1) is rendered with 80 % of its amount in the nucleoplasm and 20 % in the cytosol. Every annotated
class visible in 2-D gets a positive share; ``plastid`` (absent from human cells) is dropped.

Corpus proteins (:func:`corpus_annotated_proteins`, :mod:`locscope.io.corpus`: SCL2205 + OpenCell + DeepLoc 1.0) are
rendered from their level-1 classes with equal shares; where the source names no level-1 class (SCL2205 "Nucleus",
"Cell projection", "Cytoplasm;Nucleus") each level-2 class is drawn as its own level-1 compartment, ``nucleus`` as
the nucleoplasm. SCL2205's "Membrane" term is left out: it gathers membrane proteins of every membrane (ER,
mitochondrial outer membrane, lysosome, plasma membrane), so no single image follows it (corpus training stores first
give the human ones their Human Protein Atlas locations: :func:`locscope.io.corpus.hpa_for_membrane`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from locscope.data import ontology
from locscope.errors import InputError
from locscope.synth.compartments import COMPARTMENTS

GRADE_WEIGHTS = {3: 1.0, 2: 0.5, 1: 0.25}
UNGRADED_WEIGHT = 0.5
#: Level-2 class -> the level-1 compartment drawn for it when a source names no level-1 class.
LEVEL2_DRAWN: dict[str, str] = {"nucleus": "nucleoplasm"}
#: (label source, term) pairs whose location no single image follows (see the module docstring).
UNDRAWABLE_TERMS: frozenset[tuple[str, str]] = frozenset({("scl2205", "Membrane")})


@dataclass
class AnnotatedProtein:
    """A real protein: id, name, sequence, level-1 classes and their fractions for rendering."""

    id: str
    name: str
    sequence: str
    level1: list[str]
    compartments: dict[str, float]
    source: str


def annotation_fractions(level1: Iterable[str], grades: Mapping[str, int] | None = None) -> dict[str, float]:
    """Fractions (summing to 1) over the renderable level-1 classes of an annotation.

    Parameters
    ----------
    level1 : iterable of str
        Annotated level-1 classes.
    grades : dict of str to int, optional
        Level-1 class -> OpenCell grade (1-3); the highest grade of a class counts.

    Raises
    ------
    InputError
        If no annotated class can be rendered (e.g. only ``plastid``) or a name is not a level-1 class.
    """
    names = [c for c in dict.fromkeys(level1)]
    for name in names:
        if name not in ontology.LEVEL1:
            raise InputError(f"annotation: {name!r} is not a level-1 class of the ontology")
    visible = [c for c in names if c in COMPARTMENTS]
    if not visible:
        raise InputError(f"annotation {names}: no class visible in a 2-D cell image")
    weights = {c: GRADE_WEIGHTS.get(int((grades or {}).get(c, 0)), UNGRADED_WEIGHT) for c in visible}
    total = sum(weights.values())
    return {c: w / total for c, w in weights.items()}


def read_annotated_proteins(path: str | Path) -> list[AnnotatedProtein]:
    """Real proteins with sequences and multi-label level-1 annotations from a seq2loc-style table.

    ``opencell_raw.csv`` (``level1`` + ``Sequence`` + ``annotations_grade_{1,2,3}`` columns) is the reference input.
    Rows without a sequence or without a renderable class are skipped.

    Raises
    ------
    InputError
        If the file is not a level table with a ``Sequence`` column, or a sequence is invalid
        (:func:`locscope.io.sequences.validate_sequence`, no length limit).
    """
    from locscope.io.labels import read_level_table
    from locscope.io.sequences import validate_sequence

    records = read_level_table(path)
    if records and "Sequence" not in records[0].extra and "sequence" not in records[0].extra:
        raise InputError(f"{path}: no 'Sequence' column; label-faithful rendering needs sequences")
    proteins = []
    for rec in records:
        sequence = (rec.extra.get("Sequence") or rec.extra.get("sequence") or "").strip()
        if not sequence:
            continue
        sequence = validate_sequence(sequence, rec.id, path, max_length=None)  # any length: the simulator reads all
        grades: dict[str, int] = {}
        for grade in (1, 2, 3):
            for term in (rec.extra.get(f"annotations_grade_{grade}") or "").split(";"):
                term = term.strip()
                if not term:
                    continue
                try:
                    level1 = ontology.from_opencell(term)
                except InputError:
                    continue
                if level1:
                    grades[level1] = max(grades.get(level1, 0), grade)
        try:
            fractions = annotation_fractions(rec.level1, grades)
        except InputError:
            continue
        proteins.append(AnnotatedProtein(rec.id, rec.name, sequence, list(rec.level1), fractions, str(path)))
    return proteins


def corpus_annotated_proteins(proteins: Sequence) -> list[AnnotatedProtein]:
    """Corpus proteins (:class:`locscope.io.corpus.CorpusProtein`) as inputs of label-faithful rendering, in order.

    Proteins with an undrawable term (:data:`UNDRAWABLE_TERMS`) or no class visible in 2-D (plastid only) are
    skipped; the rules are in the module docstring.

    Examples
    --------
    >>> from locscope.io.corpus import CorpusProtein
    >>> nucleus = CorpusProtein("P1", "MPKKKRKV", "scl2205", ("scl2205",), "train", ("Nucleus",), None,
    ...                         ("nucleus",), ("nucleus",))
    >>> corpus_annotated_proteins([nucleus])[0].compartments
    {'nucleoplasm': 1.0}
    """
    out = []
    for protein in proteins:
        if any((protein.source, term) in UNDRAWABLE_TERMS for term in protein.terms):
            continue
        level1 = list(protein.level1) if protein.level1 else [LEVEL2_DRAWN.get(c, c) for c in protein.level2]
        try:
            fractions = annotation_fractions(level1)
        except InputError:
            continue
        out.append(AnnotatedProtein(protein.accession, protein.accession, protein.sequence, level1, fractions,
                                    f"corpus:{protein.source}"))
    return out
