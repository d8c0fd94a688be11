"""Label tables: HPA subcellular_location.tsv, OpenCell annotations, seq2loc level tables."""

from __future__ import annotations

import pytest

from locscope.errors import InputError
from locscope.io.labels import (
    read_hpa_locations,
    read_label_table,
    read_level_table,
    read_opencell_annotations,
    read_opencell_targets,
)

LABELS = "opencell_hpa_labels"


def test_hpa_tsv(shared_data):
    records = read_hpa_locations(shared_data / LABELS / "hpa_subcellular_location.tsv")
    assert len(records) == 12813
    tspan6 = records[0]
    assert (tspan6.id, tspan6.name) == ("ENSG00000000003", "TSPAN6")
    assert tspan6.extra["main"] == ["Cell Junctions", "Cytosol"]
    assert tspan6.level1 == ["plasma-membrane", "cytosol", "nucleoli-fibrillar-center"]
    assert tspan6.hierarchy()["level3"] == ["plasma-membrane", "cytosol", "nucleoli"]
    assert sum(not r.level1 for r in records) == 15  # only deliberately unmapped terms (Aggresome, Midbody, ...)


def test_opencell_annotations_reproduce_seq2loc_level1(shared_data):
    """seq2loc's level1 column is OpenCell's grade-3 annotations mapped through the ontology."""
    import pandas as pd

    records = {r.name: r for r in read_opencell_annotations(shared_data / LABELS / "2021-09-29-public-annotations-flat.csv")}
    assert len(records) == 1310
    assert records["AAMP"].extra["grades"] == {"cytoplasmic": 3, "nucleoplasm": 1}
    raw = pd.read_csv(shared_data / "localization_sequences" / "opencell_raw.csv")
    for _, row in raw.iterrows():
        assert set(records[row["target_name"]].level1) == set(row["level1"].split(";")), row["target_name"]
    loose = {r.name: r for r in read_opencell_annotations(shared_data / LABELS / "2021-09-29-public-annotations-flat.csv",
                                                          min_grade=1)}
    assert loose["AAMP"].level1 == ["cytosol", "nucleoplasm"]


def test_level_table_and_dispatch(shared_data):
    path = shared_data / "localization_sequences" / "opencell_raw.csv"
    records = read_level_table(path)
    assert len(records) == 1305 and records[0].id == "Q13685" and records[0].name == "AAMP"
    assert records[0].hierarchy() == {"level1": ["cytosol"], "level2": ["cytosol"], "level3": ["cytosol"],
                                      "subcell": ["Cytosol"]}
    assert read_label_table(path)[5].id == records[5].id
    assert read_label_table(shared_data / LABELS / "hpa_subcellular_location.tsv")[0].source == "hpa"
    targets = read_opencell_targets(shared_data / LABELS / "all-public-targets.csv")
    assert len(targets) == 1310 and targets[0]["target_name"] == "TMEM192"


def _error(reader, path) -> str:
    with pytest.raises(InputError) as err:
        reader(path)
    return str(err.value)


def test_bad_label_tables(tmp_path):
    table = tmp_path / "levels.csv"
    table.write_text("uniprot_id,level1,level2,level3\nP1,nucleoplasm,nucleus,nucleus\nP2,nucleus,nucleus,nucleus\n")
    assert _error(read_level_table, table) == f"{table}: line 3: column level1: class 'nucleus' not in the ontology"
    table.write_text("uniprot_id,level1,level2,level3\nP1,nucleoplasm,cytosol,nucleus\n")
    assert _error(read_level_table, table) == (
        f"{table}: line 2: column level2: 'cytosol' does not follow from level1 'nucleoplasm' (expected nucleus)")
    hpa = tmp_path / "hpa.tsv"
    hpa.write_text("Gene\tGene name\tReliability\tMain location\tAdditional location\nE1\tG1\tApproved\tNucleolus\t\n")
    assert _error(read_hpa_locations, hpa) == f"{hpa}: line 2: HPA term 'Nucleolus' not in the ontology (36 known terms)"
    hpa.write_text("Gene\tName\n")
    assert _error(read_hpa_locations, hpa) == (
        f"{hpa}: missing column(s) Gene name, Reliability, Main location, Additional location (columns: Gene, Name)")
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    assert _error(read_label_table, other) == (
        f"{other}: not a recognised label table (expected HPA 'Main location', OpenCell 'annotation_grade' or "
        "seq2loc 'level1' columns)")


def test_cytoself_organelle_markers(shared_data, tmp_path):
    from collections import Counter

    from locscope.io.labels import read_organelle_markers

    path = shared_data / LABELS / "cytoself_Supplementary_Table_1_literature-curated_organelle_ground-truth.xlsx"
    records = read_organelle_markers(path)
    assert len(records) == 2412
    assert (records[0].name, records[0].terms, records[0].level1) == ("ACTN1", ["actin-binding_protein"], ["actin-filaments"])
    counts = Counter(c for r in records for c in r.level1)
    assert counts["nucleoplasm"] == 504 and counts["endoplasmic-reticulum"] == 348
    assert counts["cytosol"] == 456 + 83 + 82 + 15  # cytosol + stress granule + ribosome + p-body
    assert sum(not r.level1 for r in records) == 44  # ERGIC
    assert read_label_table(path)[0].source == "cytoself-markers"
    (tmp_path / "bad.xlsx").write_text("not a workbook")
    assert _error(read_organelle_markers, tmp_path / "bad.xlsx") == f"{tmp_path / 'bad.xlsx'}: not a readable XLSX workbook"
