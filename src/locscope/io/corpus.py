"""The real-protein localization corpus: SCL2205 (the ``p-scldata`` package) + OpenCell + DeepLoc 1.0.

Sources
-------
``scl2205``
    19,074 UniProtKB/Swiss-Prot eukaryotic proteins with 13 location classes (nine single, four multi-location) and
    the dataset's own train / eval / held-out splits (homology-reduced by its authors). Read from the files of the
    installed ``p-scldata`` package (release 2025.6.0; later releases ship no data).
``opencell``
    1,305 human proteins imaged in HEK293T cells (``localization_sequences/opencell_raw.csv``), already mapped to
    locscope's three levels; the only source with nucleoli.
``deeploc1``
    DeepLoc 1.0's 1,678 validation proteins (``deeploc1/deeploc_our_val_set.fasta``), 10 classes.

Label mapping (:data:`SCL2205_LEVELS`, :data:`DEEPLOC_LEVELS`): each source term gives a level-3 and a level-2 class
always, and a level-1 class only where the term names one (``None`` = level 1 unknown, left out of level-1 training
and scoring). The choices:

- ``Cytoplasm`` -> cytosol at every level: Swiss-Prot writes "Cytoplasm" for proteins in the cytoplasm without a more
  specific organelle, which is the cytosol class of the image ontologies.
- ``Nucleus`` -> nucleus (levels 3 and 2), level 1 unknown: Swiss-Prot's nucleus class in SCL2205 has no nucleoli,
  speckles or bodies (it gathers them all), so nucleolar proteins are labelled *nucleus* here; only OpenCell
  labels nucleoli.
- ``Membrane`` -> plasma-membrane at every level. SCL2205's membrane class is a membrane of *any* kind: it holds
  plasma-membrane proteins (CD4, CD44) but also SEC61A1 (ER), TOM20 and MFN2 (mitochondrial outer membrane) and
  LAMP2 (lysosome); of the 88 OpenCell proteins it calls "Membrane", imaging puts 69 on endomembranes and 10 at the
  plasma membrane. The mapping keeps the class as the dataset defines it (its test labels stay comparable); the
  localizer's ``image`` label style learns the imaging meaning from OpenCell, and label-faithful rendering
  (:func:`locscope.synth.labelled.corpus_annotated_proteins`) leaves these proteins out, except the human ones the
  Human Protein Atlas images (:func:`hpa_for_membrane`, used by corpus training stores).
- ``Secreted`` / DeepLoc ``Extracellular`` -> endomembrane-system (level 3), vesicles (levels 2 and 1): inside the
  cell a secreted protein is seen along the secretory pathway, last in secretory vesicles (UniProt's "secretory
  vesicle" is level-1 vesicles).
- ``Cell projection`` -> cytoskeleton (levels 3 and 2), level 1 unknown: cilia, flagella, axons, filopodia and
  microvilli are built on microtubules or actin, and which one the term does not say.
- ``Centrosome;Cytoplasm;Cytoskeleton;Microtubule organizing center`` and ``Cytoplasm;Cytoskeleton`` are UniProt
  location *paths* written from general to specific ("Cytoplasm, cytoskeleton, microtubule organizing center,
  centrosome"), one location each: centrosome / cytoskeleton (level 1), cytoskeleton (levels 2, 3). They are not
  also labelled cytosol.
- ``Cytoplasm;Nucleus`` and ``Cytoplasm;Membrane`` are two locations: cytosol + nucleus (level 1 unknown) and
  cytosol + plasma-membrane.
- ``ER`` -> endoplasmic-reticulum; ``Peroxisome`` -> peroxisomes (level 1), vesicles (level 2); DeepLoc
  ``Golgi.apparatus`` -> golgi-apparatus; ``Lysosome/Vacuole`` -> lysosomes (level 1), vesicles (level 2); all
  endomembrane-system at level 3. ``Mitochondrion`` -> mitochondria; ``Plastid`` -> plastid at every level.

De-duplication: one entry per accession and per sequence. When sources overlap the labels come from the first of
:data:`SOURCE_PRIORITY` (OpenCell's finer image-based human labels, then DeepLoc so its validation proteins are
scored against their own labels, then SCL2205); ``sources`` lists every source that had the protein.

Homology-aware splits: proteins are single-linkage clustered by shared 6-mers. Two proteins are linked when the
distinct 6-mers they share, counted on a fixed 1/:data:`KMER_SAMPLING` subsample of 6-mer hashes (FracMinHash), are
at least :data:`LINK_CONTAINMENT` = 4% of the shorter protein's sampled 6-mers and at least
:data:`MIN_SHARED_SAMPLED_KMERS` = 3. Under independent substitutions a 6-mer survives with probability
``identity ** 6``, so 4% corresponds to ~58% sequence identity over the shorter protein (an alignment-free
stand-in for a 60% identity clustering); chance 6-mer matches between unrelated proteins almost never reach 3
sampled matches. 6-mers found in more than :data:`MAX_KMER_PROTEINS` proteins (low-complexity runs) are ignored. A cluster
goes to ``test`` when it holds an SCL2205 held-out or a DeepLoc protein, to ``val`` when it holds an SCL2205 eval
protein, and clusters of OpenCell and SCL2205-train proteins otherwise keep SCL2205's assignment (train) or, for
OpenCell-only clusters, are dealt 70 / 10 / 20 % (train / val / test) by a seeded hash of the cluster's first
accession. Close homologs therefore never sit on both sides of a split.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from locscope.data import ontology
from locscope.errors import InputError

SCLDATA_RELEASE = "2025.6.0"
SOURCE_PRIORITY: tuple[str, ...] = ("opencell", "deeploc1", "scl2205")
OPENCELL_FILE = Path("localization_sequences") / "opencell_raw.csv"
DEEPLOC_FILE = Path("deeploc1") / "deeploc_our_val_set.fasta"
KMER = 6
KMER_SAMPLING = 4
LINK_CONTAINMENT = 0.04
MIN_SHARED_SAMPLED_KMERS = 3
MAX_KMER_PROTEINS = 50
OPENCELL_SPLIT_FRACTIONS = (0.7, 0.1, 0.2)
HPA_FILE = Path("opencell_hpa_labels") / "hpa_subcellular_location.tsv"
HPA_RELIABILITIES: tuple[str, ...] = ("Enhanced", "Supported", "Approved")  # HPA's "Uncertain" left out
HUMAN_ACCESSIONS_FILE = Path(__file__).resolve().parents[1] / "assets" / "corpus" / "human_accessions.tsv"
LEVELS: tuple[str, ...] = ("level1", "level2", "level3")
CLASSES: dict[str, tuple[str, ...]] = {"level1": ontology.LEVEL1, "level2": ontology.LEVEL2, "level3": ontology.LEVEL3}

# term -> (level-1 classes or None when level 1 is unknown, level-2 classes, level-3 classes); see the module doc.
SCL2205_LEVELS: dict[str, tuple[tuple[str, ...] | None, tuple[str, ...], tuple[str, ...]]] = {
    "Cytoplasm": (("cytosol",), ("cytosol",), ("cytosol",)),
    "Nucleus": (None, ("nucleus",), ("nucleus",)),
    "Membrane": (("plasma-membrane",), ("plasma-membrane",), ("plasma-membrane",)),
    "Secreted": (("vesicles",), ("vesicles",), ("endomembrane-system",)),
    "Mitochondrion": (("mitochondria",), ("mitochondria",), ("mitochondria",)),
    "Plastid": (("plastid",), ("plastid",), ("plastid",)),
    "Peroxisome": (("peroxisomes",), ("vesicles",), ("endomembrane-system",)),
    "ER": (("endoplasmic-reticulum",), ("endoplasmic-reticulum",), ("endomembrane-system",)),
    "Cell projection": (None, ("cytoskeleton",), ("cytoskeleton",)),
    "Cytoplasm;Nucleus": (None, ("cytosol", "nucleus"), ("cytosol", "nucleus")),
    "Centrosome;Cytoplasm;Cytoskeleton;Microtubule organizing center": (
        ("centrosome",), ("cytoskeleton",), ("cytoskeleton",)),
    "Cytoplasm;Membrane": (("cytosol", "plasma-membrane"), ("cytosol", "plasma-membrane"),
                           ("cytosol", "plasma-membrane")),
    "Cytoplasm;Cytoskeleton": (("cytoskeleton",), ("cytoskeleton",), ("cytoskeleton",)),
}

DEEPLOC_LEVELS: dict[str, tuple[tuple[str, ...] | None, tuple[str, ...], tuple[str, ...]]] = {
    "Nucleus": SCL2205_LEVELS["Nucleus"], "Cytoplasm": SCL2205_LEVELS["Cytoplasm"],
    "Extracellular": SCL2205_LEVELS["Secreted"], "Mitochondrion": SCL2205_LEVELS["Mitochondrion"],
    "Cell.membrane": SCL2205_LEVELS["Membrane"], "Endoplasmic.reticulum": SCL2205_LEVELS["ER"],
    "Plastid": SCL2205_LEVELS["Plastid"], "Peroxisome": SCL2205_LEVELS["Peroxisome"],
    "Golgi.apparatus": (("golgi-apparatus",), ("golgi-apparatus",), ("endomembrane-system",)),
    "Lysosome/Vacuole": (("lysosomes",), ("vesicles",), ("endomembrane-system",)),
}


@dataclass(frozen=True)
class CorpusProtein:
    """One de-duplicated protein of the corpus.

    Attributes
    ----------
    accession : str
        UniProt accession.
    sequence : str
        Upper-case amino-acid sequence (the 20 standard letters plus X, B, Z, U, O).
    source : str
        Where the labels come from: ``'opencell'``, ``'deeploc1'`` or ``'scl2205'``.
    sources : tuple of str
        Every source that had this accession or sequence.
    source_split : str
        The source's own split: SCL2205 ``'train'`` / ``'eval'`` / ``'heldout'``, DeepLoc ``'validation'``,
        OpenCell ``''``.
    terms : tuple of str
        The source's location terms.
    level1 : tuple of str or None
        Level-1 classes, ``None`` when the source term does not name one.
    level2, level3 : tuple of str
    cluster : int
        Homology cluster (see the module doc).
    split : str
        ``'train'``, ``'val'`` or ``'test'``.
    """

    accession: str
    sequence: str
    source: str
    sources: tuple[str, ...]
    source_split: str
    terms: tuple[str, ...]
    level1: tuple[str, ...] | None
    level2: tuple[str, ...]
    level3: tuple[str, ...]
    cluster: int = -1
    split: str = ""


@dataclass
class Corpus:
    """The merged corpus; ``proteins`` in a fixed order (SCL2205 file order, then DeepLoc, then OpenCell additions)."""

    proteins: list[CorpusProtein]
    provenance: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.proteins)

    def subset(self, split: str | None = None, source: str | None = None,
               source_split: str | None = None, human: bool | None = None) -> list[CorpusProtein]:
        """Proteins of one split (``'train'`` / ``'val'`` / ``'test'``), label source, source split and organism
        (``human=True``: human proteins only, see :func:`is_human`; all if None)."""
        if split is not None and split not in ("train", "val", "test"):
            raise ValueError(f"split={split!r}: accepted values are train, val, test")
        if source is not None and source not in SOURCE_PRIORITY:
            raise ValueError(f"source={source!r}: accepted values are {', '.join(SOURCE_PRIORITY)}")
        return [p for p in self.proteins if (split is None or p.split == split) and (source is None or p.source == source)
                and (source_split is None or p.source_split == source_split)
                and (human is None or is_human(p) == human)]

    @cached_property
    def counts(self) -> dict[str, dict[str, int]]:
        """Proteins per split and label source."""
        out: dict[str, dict[str, int]] = {}
        for p in self.proteins:
            out.setdefault(p.split, {}).setdefault(p.source, 0)
            out[p.split][p.source] += 1
        return out


def label_matrix(proteins: Sequence[CorpusProtein], level: str) -> tuple[np.ndarray, np.ndarray]:
    """Multi-hot labels ``(N, len(CLASSES[level]))`` float32 and a ``(N,)`` bool mask of proteins labelled at ``level``.

    Raises
    ------
    ValueError
        For a ``level`` other than ``'level1'``, ``'level2'``, ``'level3'``.
    """
    if level not in CLASSES:
        raise ValueError(f"level={level!r}: accepted values are {', '.join(LEVELS)}")
    classes = CLASSES[level]
    index = {c: i for i, c in enumerate(classes)}
    targets = np.zeros((len(proteins), len(classes)), np.float32)
    known = np.zeros(len(proteins), bool)
    for row, protein in enumerate(proteins):
        labels = getattr(protein, level)
        if labels:
            known[row] = True
            targets[row, [index[c] for c in labels]] = 1.0
    return targets, known


# ------------------------------------------------------------------------------------------------ organism
def human_ensembl_genes(path: str | Path = HUMAN_ACCESSIONS_FILE) -> dict[str, tuple[str, ...]]:
    """UniProt accession -> Ensembl gene ids of the corpus' human SCL2205 and DeepLoc 1.0 proteins.

    Neither source names the organism (SCL2205 gives accessions, DeepLoc 1.0 headers accession, location and
    membrane / soluble), so the bundled table (:data:`HUMAN_ACCESSIONS_FILE`: tab-separated ``accession``,
    ``ensembl_genes`` comma-separated, ``#`` comments) holds the corpus accessions found in the Homo sapiens
    annotation package org.Hs.eg.db 3.16.0 (UniProt mapping of 2022-09-23; :func:`human_accessions_from_orgdb`
    rebuilds it). It covers 1,283 of OpenCell's 1,305 human accessions (the 22 others are unreviewed or isoform
    entries), so a few human Swiss-Prot proteins may be missing from it.
    """
    out: dict[str, tuple[str, ...]] = {}
    for line in Path(path).read_text().splitlines():
        if not line.strip() or line.startswith("#") or line.startswith("accession\t"):
            continue
        accession, _, genes = line.partition("\t")
        out[accession.strip()] = tuple(g for g in genes.strip().split(",") if g)
    return out


def human_accessions(path: str | Path = HUMAN_ACCESSIONS_FILE) -> frozenset[str]:
    """The accessions of :func:`human_ensembl_genes`."""
    return frozenset(human_ensembl_genes(path))


def human_accessions_from_orgdb(sqlite_path: str | Path, accessions: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """The ``accessions`` listed in the ``uniprot`` table of an org.Hs.eg.db SQLite file, each with its Ensembl
    gene ids (table ``ensembl``), sorted by accession."""
    import sqlite3

    connection = sqlite3.connect(f"file:{Path(sqlite_path)}?mode=ro", uri=True)
    try:
        genes: dict[str, set[str]] = {row[0]: set() for row in connection.execute("SELECT uniprot_id FROM uniprot")}
        for accession, gene in connection.execute(
                "SELECT u.uniprot_id, e.ensembl_id FROM uniprot u JOIN ensembl e ON u._id = e._id"):
            genes[accession].add(gene)
    finally:
        connection.close()
    return {a: tuple(sorted(genes[a])) for a in sorted(set(accessions) & set(genes))}


def is_human(protein: CorpusProtein) -> bool:
    """Whether ``protein`` is human: an OpenCell protein, or its accession is in :func:`human_accessions`."""
    return "opencell" in protein.sources or protein.accession in _HUMAN_ACCESSIONS()


_HUMAN_ACCESSIONS = cache(human_accessions)


def hpa_labelled(proteins: Sequence[CorpusProtein], hpa_path: str | Path,
                 reliabilities: Sequence[str] = HPA_RELIABILITIES, main_only: bool = False) -> list[CorpusProtein]:
    """Human ``proteins`` relabelled from the Human Protein Atlas (``subcellular_location.tsv``): imaging of
    antibody-stained human cell lines, the convention of OpenCell's labels rather than Swiss-Prot's.

    A protein is kept when one of its Ensembl genes (:func:`human_ensembl_genes`) has an HPA row of one of
    ``reliabilities`` whose main (and, unless ``main_only``, additional) locations map to level-1 classes
    (:func:`locscope.data.ontology.from_hpa`; mitotic structures and aggresomes map to none); its ``source``
    becomes ``'hpa'``, ``terms`` the HPA terms, and the three levels follow the level-1 classes. Input order.
    """
    from locscope.io.labels import read_hpa_locations

    records = {r.id: r for r in read_hpa_locations(hpa_path) if r.extra["reliability"] in reliabilities}
    genes = human_ensembl_genes()
    out = []
    for protein in proteins:
        record = next((records[g] for g in genes.get(protein.accession, ()) if g in records), None)
        if record is None:
            continue
        terms = tuple(record.extra["main"] if main_only else record.terms)
        level1 = [c for c in dict.fromkeys(ontology.from_hpa(t) for t in terms) if c]
        if not level1:
            continue
        levels = ontology.hierarchy_labels(level1)
        out.append(_replace(protein, source="hpa", terms=terms, level1=tuple(levels["level1"]),
                            level2=tuple(levels["level2"]), level3=tuple(levels["level3"])))
    return out


def hpa_for_membrane(proteins: Sequence[CorpusProtein], hpa_path: str | Path,
                     reliabilities: Sequence[str] = HPA_RELIABILITIES) -> list[CorpusProtein]:
    """``proteins`` with every human SCL2205 protein of the ``Membrane`` term relabelled from the Human Protein Atlas
    (:func:`hpa_labelled`), where HPA has it; the others unchanged, in input order.

    SCL2205's "Membrane" is a membrane of any kind, so no single image follows it; HPA's imaging says which one
    (plasma membrane, ER, Golgi, vesicles, mitochondria, ...). Label-faithful rendering uses this to draw these
    proteins instead of leaving them out.
    """
    targets = [p for p in proteins if p.source == "scl2205" and "Membrane" in p.terms and is_human(p)]
    relabelled = {p.accession: p for p in hpa_labelled(targets, hpa_path, reliabilities)}
    return [relabelled.get(p.accession, p) for p in proteins]


# ------------------------------------------------------------------------------------------------ sources
def scldata_directory() -> Path:
    """The ``data`` folder of the installed ``p-scldata`` package.

    Raises
    ------
    InputError
        When the package is missing or is a release without data (anything but 2025.6.0 so far).
    """
    import importlib.metadata
    import importlib.util

    spec = importlib.util.find_spec("scldata")
    if spec is None or spec.origin is None:
        raise InputError(f"the SCL2205 corpus needs the p-scldata package: pip install 'p-scldata=={SCLDATA_RELEASE}'")
    folder = Path(spec.origin).parent / "data"
    missing = [name for name in ("scl2205.csv", "labels.json", "splits.json", "entries.json")
               if not (folder / name).is_file()]
    if missing:
        version = importlib.metadata.version("p-scldata")
        raise InputError(f"{folder}: p-scldata {version} ships no data ({', '.join(missing)} missing); "
                         f"install p-scldata=={SCLDATA_RELEASE}")
    return folder


def read_scl2205(folder: str | Path | None = None) -> list[CorpusProtein]:
    """SCL2205's 19,074 proteins with their terms, levels and own split, in file order."""
    folder = Path(folder) if folder is not None else scldata_directory()
    labels = json.loads((folder / "labels.json").read_text())["index_to_label"]
    entries = json.loads((folder / "entries.json").read_text())
    splits = json.loads((folder / "splits.json").read_text())
    own_split = {}
    for key, name in (("trn", "train"), ("evl", "eval"), ("tst", "heldout")):
        for index in splits[key]:
            own_split[entries[str(index)]] = name
    proteins = []
    path = folder / "scl2205.csv"
    with open(path, newline="") as handle:
        for line, row in enumerate(csv.DictReader(handle), start=2):
            term = labels.get(str(row["scl"]).strip())
            if term not in SCL2205_LEVELS:
                raise InputError(f"{path}: line {line}: location class {row['scl']!r} not in the mapping")
            level1, level2, level3 = SCL2205_LEVELS[term]
            sequence = _sequence(row["seq"], row["entry"], path)
            proteins.append(CorpusProtein(row["entry"], sequence, "scl2205", ("scl2205",),
                                          own_split.get(row["entry"], ""), tuple(term.split(";")), level1, level2,
                                          level3))
    return proteins


def read_deeploc1(path: str | Path) -> list[CorpusProtein]:
    """DeepLoc 1.0 validation proteins (FASTA with DeepLoc headers)."""
    from locscope.io.sequences import read_fasta

    proteins = []
    for record in read_fasta(path, max_length=None):
        if not record.labels:
            raise InputError(f"{path}: record '{record.id}': not a DeepLoc header (no location)")
        level1, level2, level3 = _union(DEEPLOC_LEVELS[term] for term in record.labels)
        proteins.append(CorpusProtein(record.id, record.sequence, "deeploc1", ("deeploc1",), "validation",
                                      tuple(record.labels), level1, level2, level3))
    return proteins


def read_opencell(path: str | Path) -> list[CorpusProtein]:
    """OpenCell proteins with their level-1/2/3 columns (``;``-separated)."""
    path = Path(path)
    proteins = []
    with open(path, newline="") as handle:
        for line, row in enumerate(csv.DictReader(handle), start=2):
            accession = (row.get("uniprot_id") or "").strip()
            if not accession:
                raise InputError(f"{path}: line {line}: no uniprot_id")
            levels = [tuple(t.strip() for t in (row.get(level) or "").split(";") if t.strip()) for level in LEVELS]
            for level, values in zip(LEVELS, levels):
                unknown = [v for v in values if v not in CLASSES[level]]
                if unknown or not values:
                    raise InputError(f"{path}: line {line}: {level} {unknown or 'missing'} not in the ontology")
            terms = tuple(t for col in ("annotations_grade_3", "annotations_grade_2")
                          for t in (row.get(col) or "").split(";") if t.strip())
            sequence = _sequence(row["Sequence"], accession, path)
            proteins.append(CorpusProtein(accession, sequence, "opencell", ("opencell",), "", terms, *levels))
    return proteins


_ALLOWED_RESIDUES = frozenset("ACDEFGHIKLMNPQRSTVWYXBZUO")


def _sequence(raw: str, record: str, source: Path) -> str:
    """The upper-case sequence; anything unusual goes through the full validator for its one-line error."""
    sequence = raw.strip().upper()
    if sequence and set(sequence) <= _ALLOWED_RESIDUES:
        return sequence
    from locscope.io.sequences import validate_sequence

    return validate_sequence(raw, record, source, max_length=None)


def _union(parts: Iterable[tuple]) -> tuple:
    level1: list[str] | None = []
    level2: list[str] = []
    level3: list[str] = []
    for l1, l2, l3 in parts:
        level1 = None if (level1 is None or l1 is None) else level1 + [c for c in l1 if c not in level1]
        level2 += [c for c in l2 if c not in level2]
        level3 += [c for c in l3 if c not in level3]
    return (tuple(level1) if level1 is not None else None), tuple(level2), tuple(level3)


def merge_sources(*sources: Sequence[CorpusProtein]) -> list[CorpusProtein]:
    """One protein per accession and per sequence; labels from the first source in :data:`SOURCE_PRIORITY`.

    Proteins are kept in input order (the first occurrence's position).
    """
    groups: list[list[CorpusProtein]] = []
    by_key: dict[str, int] = {}
    for protein in (p for source in sources for p in source):
        keys = ("a:" + protein.accession, "s:" + protein.sequence)
        found = [by_key[k] for k in keys if k in by_key]
        if found:
            target = found[0]
            for other in found[1:]:  # an accession match and a sequence match in two different groups: join them
                if other != target and groups[other]:
                    groups[target].extend(groups[other])
                    for member in groups[other]:
                        by_key["a:" + member.accession] = by_key["s:" + member.sequence] = target
                    groups[other] = []
            groups[target].append(protein)
        else:
            target = len(groups)
            groups.append([protein])
        for key in keys:
            by_key[key] = target
    merged = []
    for group in groups:
        if not group:
            continue
        best = min(group, key=lambda p: SOURCE_PRIORITY.index(p.source))
        sources_seen = tuple(s for s in SOURCE_PRIORITY if any(p.source == s for p in group))
        scl = next((p.source_split for p in group if p.source == "scl2205"), "")
        merged.append(_replace(best, sources=sources_seen,
                               source_split=best.source_split if best.source != "opencell" else scl))
    return merged


def _replace(protein: CorpusProtein, **changes) -> CorpusProtein:
    from dataclasses import replace

    return replace(protein, **changes)


# ------------------------------------------------------------------------------------------------ homology clusters
_AA_INDEX = np.full(256, 20, np.int64)
for _i, _aa in enumerate("ACDEFGHIKLMNPQRSTVWY"):
    _AA_INDEX[ord(_aa)] = _i


def sampled_kmers(sequences: Sequence[str], k: int = KMER, sampling: int = KMER_SAMPLING) -> tuple[np.ndarray, np.ndarray]:
    """Distinct k-mers of every sequence whose hash falls in a fixed 1/``sampling`` of hash space (FracMinHash).

    Returns
    -------
    rows, codes : np.ndarray
        int64 pairs (sequence index, k-mer code in base 21), each pair once.
    """
    joined = "".join(sequences).encode("ascii")
    residues = _AA_INDEX[np.frombuffer(joined, np.uint8)]
    lengths = np.array([len(s) for s in sequences], np.int64)
    owner = np.repeat(np.arange(len(sequences), dtype=np.int64), lengths)
    count = residues.size - k + 1
    if count <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    codes = np.zeros(count, np.int64)
    for j in range(k):
        codes = codes * 21 + residues[j:j + count]
    inside = owner[:count] == owner[k - 1:]  # k-mers that do not run across two sequences
    hashed = (codes.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(40)  # Fibonacci hashing
    keep = inside & (hashed % np.uint64(sampling) == 0)
    keys = np.unique(owner[:count][keep] * 21 ** k + codes[keep])
    return keys // 21 ** k, keys % 21 ** k


def homology_clusters(sequences: Sequence[str], containment: float = LINK_CONTAINMENT, k: int = KMER,
                      sampling: int = KMER_SAMPLING, min_shared: int = MIN_SHARED_SAMPLED_KMERS,
                      max_kmer_proteins: int = MAX_KMER_PROTEINS) -> np.ndarray:
    """Single-linkage clusters of sequences linked by shared sampled k-mers (rule in the module docstring).

    Returns
    -------
    np.ndarray
        ``(N,)`` int cluster index, numbered in order of first appearance.
    """
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    row, col = sampled_kmers(sequences, k, sampling)
    _, col = np.unique(col, return_inverse=True)
    matrix = sp.csr_matrix((np.ones(row.size, np.float32), (row, col)),
                           shape=(len(sequences), int(col.max(initial=0)) + 1))
    sizes = np.asarray(matrix.sum(1)).ravel()
    proteins_per_kmer = np.asarray(matrix.sum(0)).ravel()
    matrix = matrix[:, np.flatnonzero(proteins_per_kmer <= max_kmer_proteins)]
    shared = (matrix @ matrix.T).tocoo()
    upper = shared.row < shared.col
    i, j, count = shared.row[upper], shared.col[upper], shared.data[upper]
    linked = (count >= min_shared) & (count >= containment * np.maximum(np.minimum(sizes[i], sizes[j]), 1))
    graph = sp.coo_matrix((np.ones(int(linked.sum())), (i[linked], j[linked])), shape=(len(sequences),) * 2)
    _, labels = connected_components(graph, directed=False)
    _, first = np.unique(labels, return_index=True)
    order = np.argsort(np.argsort(first))  # renumber clusters by first member
    return order[labels]


def assign_splits(proteins: Sequence[CorpusProtein], clusters: np.ndarray, seed: int = 0) -> list[str]:
    """Split of every protein from its cluster (rules in the module doc)."""
    members: dict[int, list[int]] = {}
    for index, cluster in enumerate(clusters):
        members.setdefault(int(cluster), []).append(index)
    splits = [""] * len(proteins)
    for cluster, indices in members.items():
        group = [proteins[i] for i in indices]
        if any(p.source_split == "heldout" or "deeploc1" in p.sources for p in group):
            split = "test"
        elif any(p.source_split == "eval" for p in group):
            split = "val"
        elif any("scl2205" in p.sources for p in group):
            split = "train"
        else:
            digest = hashlib.sha256(f"{seed}:{group[0].accession}".encode()).digest()
            u = int.from_bytes(digest[:8], "big") / 2.0 ** 64
            train, val, _ = OPENCELL_SPLIT_FRACTIONS
            split = "train" if u < train else "val" if u < train + val else "test"
        for i in indices:
            splits[i] = split
    return splits


def load_corpus(shared_data: str | Path, seed: int = 0, scldata_folder: str | Path | None = None) -> Corpus:
    """Build the merged, de-duplicated, homology-split corpus.

    Parameters
    ----------
    shared_data : path
        Folder holding ``localization_sequences/opencell_raw.csv`` and ``deeploc1/deeploc_our_val_set.fasta``.
    seed : int
        Seeds the deal of OpenCell-only clusters.
    scldata_folder : path, optional
        The SCL2205 data folder (default: the installed ``p-scldata`` package's).

    Raises
    ------
    InputError
        A missing file or package, an unknown label.

    Examples
    --------
    >>> corpus = load_corpus("../shared/data")       # doctest: +SKIP
    >>> len(corpus.subset("test", source="opencell"))  # doctest: +SKIP
    """
    shared_data = Path(shared_data)
    for relative in (OPENCELL_FILE, DEEPLOC_FILE):
        if not (shared_data / relative).is_file():
            raise InputError(f"{shared_data / relative}: file not found (the corpus needs OpenCell and DeepLoc 1.0)")
    merged = merge_sources(read_scl2205(scldata_folder), read_deeploc1(shared_data / DEEPLOC_FILE),
                           read_opencell(shared_data / OPENCELL_FILE))
    clusters = homology_clusters([p.sequence for p in merged])
    splits = assign_splits(merged, clusters, seed)
    proteins = [_replace(p, cluster=int(c), split=s) for p, c, s in zip(merged, clusters, splits)]
    provenance = {"scl2205": f"p-scldata {SCLDATA_RELEASE}", "opencell": str(OPENCELL_FILE),
                  "deeploc1": str(DEEPLOC_FILE), "kmer": KMER, "kmer_sampling": KMER_SAMPLING,
                  "link_containment": LINK_CONTAINMENT, "seed": seed}
    return Corpus(proteins, provenance)
