"""The localization ontology equals seq2loc's hierarchical_label_set.yaml and maps vocabularies correctly."""

from __future__ import annotations

import pytest
import yaml

from locscope.data import ontology as onto
from locscope.errors import InputError


def test_python_data_equals_yaml(shared_data):
    facts = yaml.safe_load((shared_data / "localization_sequences" / "hierarchical_label_set.yaml").read_text())
    assert list(onto.LEVEL1) == facts["level1"]
    assert list(onto.LEVEL2) == facts["level2"]
    assert list(onto.LEVEL3) == facts["level3"]
    assert onto.LEVEL1_TO_LEVEL2 == facts["lvl1_to_lvl2"]
    assert onto.LEVEL1_TO_LEVEL3 == facts["lvl1_to_lvl3"]
    assert onto.HPA_TO_LEVEL1 == facts["hpa_to_lvl1"]
    assert onto.OPENCELL_TO_LEVEL1 == facts["opencell_to_lvl1"]
    assert onto.UNIPROT_TO_LEVEL1 == facts["uniprot_to_lvl1"]


def test_class_counts_and_closure():
    assert len(onto.LEVEL1) == 22 and "plastid" in onto.LEVEL1  # 21 classes + plastid
    assert len(onto.LEVEL2) == 10 and len(onto.LEVEL3) == 8
    assert set(onto.LEVEL1_TO_LEVEL2.values()) == set(onto.LEVEL2)
    assert set(onto.LEVEL1_TO_LEVEL3.values()) == set(onto.LEVEL3)
    for vocabulary in (onto.HPA_TO_LEVEL1, onto.OPENCELL_TO_LEVEL1, onto.UNIPROT_TO_LEVEL1):
        assert set(vocabulary.values()) - {""} <= set(onto.LEVEL1)


def test_subcell_classes_and_mapping():
    assert len(onto.SUBCELL_CLASSES) == 31
    assert onto.SUBCELL_CLASSES[0] == "Actin filaments" and onto.SUBCELL_CLASSES[-1] == "Negative"
    assert onto.SUBCELL_CLASSES.index("Nucleoplasm") == 26
    assert set(onto.SUBCELL_FROM_LEVEL1) == set(onto.LEVEL1)
    assert set(onto.SUBCELL_FROM_LEVEL1.values()) <= set(onto.SUBCELL_CLASSES)
    # every HPA class that maps to a level-1 class maps back to itself or to its level-1 class's chosen HPA name
    for hpa, level1 in onto.HPA_TO_LEVEL1.items():
        if level1 and hpa in ("Nucleoplasm", "Cytosol", "Mitochondria", "Nucleoli fibrillar center", "Vesicles"):
            assert onto.to_subcell(level1) == hpa
    assert onto.to_subcell("nucleoli-fibrillar-center") == "Nucleoli fibrillar center"
    assert onto.subcell_index("endoplasmic-reticulum") == 8


@pytest.mark.parametrize(
    ("convert", "term", "expected"),
    [
        (onto.from_hpa, "Nucleoli rim", "nucleoli"),
        (onto.from_hpa, "Focal adhesion sites", "actin-filaments"),
        (onto.from_hpa, "Aggresome", None),
        (onto.from_hpa, "nucleoplasm", "nucleoplasm"),  # case-insensitive
        (onto.from_opencell, "nucleolus_fc_dfc", "nucleoli-fibrillar-center"),
        (onto.from_opencell, "cytoplasmic", "cytosol"),
        (onto.from_uniprot, "Mitochondrion inner membrane", "mitochondria"),
        (onto.from_uniprot, "Host nucleus", None),
        (onto.from_uniprot, "P-body", "cytosol"),
    ],
)
def test_vocabulary_lookup(convert, term, expected):
    assert convert(term) == expected


def test_levels_and_errors():
    assert onto.to_level2("nuclear-speckles") == "nucleus"
    assert onto.to_level3("lysosomes") == "endomembrane-system"
    with pytest.raises(InputError, match=r"^level-1 class 'nucleus' not recognised; accepted: cytoskeleton, "):
        onto.to_level2("nucleus")
    with pytest.raises(InputError, match=r"^HPA term 'Nucleolus' not in the ontology \(36 known terms\)$"):
        onto.from_hpa("Nucleolus")
    labels = onto.hierarchy_labels(onto.map_terms(["Nucleoplasm", "Nuclear speckles", "Aggresome", "Cytosol"], "hpa"))
    assert labels == {
        "level1": ["nucleoplasm", "nuclear-speckles", "cytosol"],
        "level2": ["nucleus", "cytosol"],
        "level3": ["nucleus", "cytosol"],
        "subcell": ["Nucleoplasm", "Nuclear speckles", "Cytosol"],
    }


def test_opencell_raw_levels_match_ontology(shared_data):
    """The seq2loc level columns of opencell_raw.csv are the ontology applied to its level1 column."""
    import pandas as pd

    table = pd.read_csv(shared_data / "localization_sequences" / "opencell_raw.csv")
    for _, row in table.iterrows():
        level1 = row["level1"].split(";")
        assert set(row["level2"].split(";")) == {onto.to_level2(c) for c in level1}, row["target_name"]
        assert set(row["level3"].split(";")) == {onto.to_level3(c) for c in level1}, row["target_name"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("SUBCELLULAR LOCATION: Cytoplasm, cytoskeleton, microtubule organizing center, centrosome "
         "{ECO:0000269|PubMed:1}. Nucleus.", ["centrosome", "nucleoplasm"]),
        ("[Isoform 1]: Cell membrane; Single-pass type I membrane protein. Note=Moves to the Golgi.", ["plasma-membrane"]),
        ("Nucleus, nucleolus. Cytoplasm, cytosol.", ["nucleoli", "cytosol"]),
        ("Mitochondrion matrix. Mitochondrion inner membrane; Peripheral membrane protein; Matrix side.", ["mitochondria"]),
        ("Secreted.", []),
    ],
)
def test_parse_uniprot_location(text, expected):
    assert onto.parse_uniprot_location(text) == expected


def test_parse_uniprot_location_unknown():
    with pytest.raises(InputError) as err:
        onto.parse_uniprot_location("Nucleus. Warp core.")
    assert str(err.value) == "UniProt location 'Warp core' not in the ontology"


def test_deeploc_classes_follow_uniprot_terms():
    for deeploc, level1 in onto.DEEPLOC_TO_LEVEL1.items():
        if deeploc == "Extracellular":
            assert level1 == ""
            continue
        uniprot_term = deeploc.replace(".", " ").split("/")[0]  # "Cell.membrane" -> "Cell membrane"
        assert onto.from_uniprot(uniprot_term) == level1, deeploc
