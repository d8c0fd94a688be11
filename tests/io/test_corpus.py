"""The real-protein corpus: SCL2205 from the installed p-scldata, OpenCell, DeepLoc 1.0, label mapping, splits."""

from __future__ import annotations

import importlib.metadata

import numpy as np
import pytest

from locscope.io import corpus as corpus_module
from locscope.io.corpus import (
    CorpusProtein, homology_clusters, label_matrix, merge_sources, read_scl2205, scldata_directory,
)
from locscope.errors import InputError


@pytest.fixture
def corpus(real_corpus):
    return real_corpus


def test_scldata_release_ships_the_data():
    assert importlib.metadata.version("p-scldata") == "2025.6.0"
    folder = scldata_directory()
    assert (folder / "scl2205.csv").stat().st_size > 9_000_000
    proteins = read_scl2205(folder)
    assert len(proteins) == 19074
    assert sum(p.source_split == "heldout" for p in proteins) == 2631


def test_missing_scldata_files_are_one_line_errors(tmp_path, monkeypatch):
    import importlib.util

    (tmp_path / "scldata").mkdir()
    (tmp_path / "scldata" / "__init__.py").write_text("")

    class Spec:
        origin = str(tmp_path / "scldata" / "__init__.py")

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: Spec())
    with pytest.raises(InputError, match="ships no data"):
        scldata_directory()


def test_splits_never_share_an_accession_a_sequence_or_a_homology_cluster(corpus):
    seen_accession, seen_sequence, cluster_split = {}, {}, {}
    for protein in corpus.proteins:
        assert seen_accession.setdefault(protein.accession, protein.split) == protein.split
        assert seen_sequence.setdefault(protein.sequence, protein.split) == protein.split
        assert cluster_split.setdefault(protein.cluster, protein.split) == protein.split
    assert len(seen_accession) == len(corpus) == len(seen_sequence)  # de-duplicated by accession and by sequence
    assert all(p.split == "test" for p in corpus.proteins if p.source_split == "heldout" or "deeploc1" in p.sources)
    counts = {split: len(corpus.subset(split)) for split in ("train", "val", "test")}
    assert counts["train"] > 10000 and counts["val"] > 500
    assert len(corpus.subset("test", source="opencell")) > 200  # held-out human proteins
    assert len(corpus.subset("test", source="deeploc1")) > 1600


@pytest.mark.parametrize("accession, source, level1, level2, level3", [
    ("P01730", "scl2205", ("plasma-membrane",), ("plasma-membrane",), ("plasma-membrane",)),  # CD4, "Membrane"
    ("P02655", "scl2205", ("vesicles",), ("vesicles",), ("endomembrane-system",)),  # APOC2, "Secreted"
    ("P30952", "scl2205", ("peroxisomes",), ("vesicles",), ("endomembrane-system",)),  # yeast MLS1, "Peroxisome"
    ("Q9Y6K9", "scl2205", None, ("cytosol", "nucleus"), ("cytosol", "nucleus")),  # NEMO, "Cytoplasm;Nucleus"
    ("P06748", "opencell", ("nucleoli",), ("nucleoli",), ("nucleoli",)),  # NPM1: OpenCell's labels win over SCL2205
])
def test_label_mapping_on_known_entries(corpus, accession, source, level1, level2, level3):
    protein = next(p for p in corpus.proteins if p.accession == accession)
    assert (protein.source, protein.level1, protein.level2, protein.level3) == (source, level1, level2, level3)
    if accession == "P06748":
        assert protein.sources == ("opencell", "scl2205")


def test_every_scl2205_class_maps_into_the_ontology():
    from locscope.data import ontology

    for level1, level2, level3 in (*corpus_module.SCL2205_LEVELS.values(), *corpus_module.DEEPLOC_LEVELS.values()):
        assert set(level2) <= set(ontology.LEVEL2) and set(level3) <= set(ontology.LEVEL3)
        if level1 is not None:
            assert {ontology.to_level2(c) for c in level1} == set(level2)
            assert {ontology.to_level3(c) for c in level1} == set(level3)


def test_merge_keeps_one_entry_per_accession_and_sequence():
    def protein(accession, sequence, source):
        return CorpusProtein(accession, sequence, source, (source,), "train" if source == "scl2205" else "", (),
                             None, ("cytosol",), ("cytosol",))

    merged = merge_sources([protein("A1", "MKV", "scl2205"), protein("A2", "MLL", "scl2205")],
                           [protein("A2", "MLLX", "deeploc1"), protein("A3", "MKV", "opencell")])
    assert [(p.accession, p.source, p.sources) for p in merged] == [
        ("A3", "opencell", ("opencell", "scl2205")), ("A2", "deeploc1", ("deeploc1", "scl2205"))]
    assert merged[0].source_split == "train"  # the SCL2205 split of an OpenCell protein is kept


def test_homology_clusters_link_close_homologs_only(rng):
    residues = np.array(list("ACDEFGHIKLMNPQRSTVWY"))
    base = "".join(rng.choice(residues, 400))
    mutant = list(base)
    for position in rng.choice(400, 40, replace=False):  # 90% identity
        mutant[position] = rng.choice(residues)
    unrelated = "".join(rng.choice(residues, 400))
    clusters = homology_clusters([base, unrelated, "".join(mutant)])
    assert clusters[0] == clusters[2] != clusters[1]


def test_label_matrix_marks_unknown_level1(corpus):
    proteins = corpus.subset("train")[:200]
    targets, known = label_matrix(proteins, "level1")
    assert targets.shape == (200, 22) and (targets[~known] == 0).all() and (targets[known].sum(1) >= 1).all()
    with pytest.raises(ValueError, match="level='level4'"):
        label_matrix(proteins, "level4")


def test_corpus_proteins_render_where_their_annotation_says(corpus):
    from locscope.synth.labelled import corpus_annotated_proteins

    by_accession = {p.accession: p for p in corpus.proteins}
    picks = [by_accession[a] for a in ("Q9Y6K9", "P02655", "P06748", "P01730")]  # NEMO, APOC2, NPM1, CD4
    rendered = {p.id: p for p in corpus_annotated_proteins(picks)}
    assert rendered["Q9Y6K9"].compartments == {"cytosol": 0.5, "nucleoplasm": 0.5}  # level 1 unknown: from level 2
    assert rendered["P02655"].compartments == {"vesicles": 1.0}
    assert rendered["P06748"].compartments == {"nucleoli": 1.0} and rendered["P06748"].source == "corpus:opencell"
    assert "P01730" not in rendered  # SCL2205 "Membrane": any membrane, no single image follows it


def test_celldiff_store_from_the_corpus_keeps_its_splits(tmp_path, corpus):
    from locscope.data.store import Store
    from locscope.training.celldiff_data import build_training_store

    store = build_training_store(tmp_path / "cells", None, corpus=corpus, corpus_limit=12, image_size=32,
                                 cells_per_protein=1, n_synthetic=0, progress=False)
    split_of = {p.accession: p for p in corpus.proteins}
    store = Store.open(tmp_path / "cells")
    assert 6 <= len(store) <= 12  # SCL2205 "Membrane" proteins (~1 in 4) are left out
    splits = set()
    for i in range(len(store)):
        item = store[i]
        protein = split_of[item["protein_id"]]
        assert store.split_indices(protein.split).tolist().count(i) == 1  # the corpus split, never another
        assert item["sequence"] == protein.sequence
        assert set(item["labels"]["level3"]) == set(protein.level3) - {"plastid"}  # the image follows the annotation
        splits.add(protein.split)
    assert {"train", "test"} <= splits
    with pytest.raises(InputError, match="give one source"):
        build_training_store(tmp_path / "other", "opencell_raw.csv", corpus=corpus, progress=False)


def test_human_accessions_list_and_its_rebuild_from_an_orgdb_file(tmp_path):
    import sqlite3

    human = corpus_module.human_accessions()
    assert len(human) == 4415
    assert "Q9Y4C2" in human  # TCAF1, human (SCL2205 and DeepLoc 1.0)
    assert "P38720" not in human  # GND1, yeast (SCL2205)
    database = tmp_path / "org.Hs.eg.sqlite"
    assert corpus_module.human_ensembl_genes()["Q9Y4C2"] == ("ENSG00000198420",)
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE uniprot (_id INTEGER, uniprot_id TEXT)")
        connection.execute("CREATE TABLE ensembl (_id INTEGER, ensembl_id TEXT)")
        connection.executemany("INSERT INTO uniprot VALUES (?, ?)", [(1, "Q9Y4C2"), (2, "P04217"), (3, "A0A0A0")])
        connection.executemany("INSERT INTO ensembl VALUES (?, ?)", [(1, "ENSG2"), (1, "ENSG1"), (2, "ENSG3")])
    assert corpus_module.human_accessions_from_orgdb(database, ["P38720", "Q9Y4C2", "A0A0A0"]) == {
        "A0A0A0": (), "Q9Y4C2": ("ENSG1", "ENSG2")}


def test_human_subsets(corpus):
    held_out = corpus.subset("test", source="scl2205", source_split="heldout")
    human = corpus.subset("test", source="scl2205", source_split="heldout", human=True)
    other = corpus.subset("test", source="scl2205", source_split="heldout", human=False)
    assert len(human) + len(other) == len(held_out) and 400 < len(human) < len(held_out) / 2
    assert all(p.accession in corpus_module.human_accessions() for p in human)
    assert corpus.subset(source="opencell", human=False) == []  # OpenCell proteins are human


def test_hpa_relabelling_of_human_proteins(shared_data):
    protein = CorpusProtein("O75063", "MKLK", "scl2205", ("scl2205",), "train", ("Membrane",), ("plasma-membrane",),
                            ("plasma-membrane",), ("plasma-membrane",))
    yeast = CorpusProtein("P38720", "MSAD", "scl2205", ("scl2205",), "train", ("Cytoplasm",), ("cytosol",),
                          ("cytosol",), ("cytosol",))
    hpa = shared_data / corpus_module.HPA_FILE
    (relabelled,) = corpus_module.hpa_labelled([protein, yeast], hpa)  # FAM20B: Golgi apparatus; Nucleoplasm
    assert (relabelled.source, relabelled.terms) == ("hpa", ("Golgi apparatus", "Nucleoplasm"))
    assert relabelled.level1 == ("golgi-apparatus", "nucleoplasm")
    assert relabelled.level3 == ("endomembrane-system", "nucleus")
    assert corpus_module.hpa_labelled([protein], hpa, main_only=True)[0].level2 == ("golgi-apparatus",)
    assert corpus_module.hpa_labelled([protein], hpa, reliabilities=("Enhanced",)) == []  # FAM20B is "Supported"


def test_human_membrane_proteins_take_their_hpa_locations(corpus, shared_data):
    from collections import Counter

    from locscope.io.corpus import HPA_FILE, hpa_for_membrane
    from locscope.synth.labelled import corpus_annotated_proteins

    relabelled = hpa_for_membrane(corpus.proteins, shared_data / HPA_FILE)
    changed = [(old, new) for old, new in zip(corpus.proteins, relabelled) if old is not new]
    assert Counter(new.split for _, new in changed) == {"train": 380, "test": 132, "val": 44}
    assert all(old.source == "scl2205" and "Membrane" in old.terms and new.source == "hpa" and
               (new.accession, new.sequence, new.split, new.cluster) == (old.accession, old.sequence, old.split,
                                                                          old.cluster) for old, new in changed)
    new = dict(changed[0][1].__dict__)
    assert (new["accession"], new["level1"]) == ("A1L0T0", ("golgi-apparatus", "vesicles"))
    assert len(corpus_annotated_proteins(relabelled)) == len(corpus_annotated_proteins(corpus.proteins)) + 556
