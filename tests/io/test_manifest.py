"""Manifests -> stores from the real CELL-Diff sample images, the dataset CLI, and manifest errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from locscope.cli import main
from locscope.io.manifest import build_store_from_manifest, parse_manifest
from locscope.data.store import Store, partial_path
from locscope.errors import InputError
from locscope.io import read_image, read_sequences

NLS_GFP = "MPKKKRKVGSMVSKGEELFTGVVPILVELDGDVNGHKFSVSGEGEGDATYGKLTLKFICTTGKLPVPWPTLVTTLTYGVQCFSRYPDHMKQHDFFKSAMPEGY"


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def hpa_manifest(tmp_path: Path, shared_data: Path) -> tuple[Path, Path]:
    """A CSV manifest over the six HPA sample cells: per-channel columns, inline and FASTA-id sequences."""
    hpa = shared_data / "celldiff_samples" / "hpa"
    fasta = shared_data / "deeploc1" / "deeploc_our_val_set.fasta"
    ids = [r.id for r in read_sequences(fasta, max_length=None)[:2]]
    rows = ["id,protein_id,sequence,sequence_id,nucleus,er,microtubules,level1,hpa_location,cell_line"]
    for i, cell in enumerate(["1", "2", "3", "4", "5", "nls"]):
        folder = hpa / cell
        seq, seq_id = (NLS_GFP, "") if cell == "nls" else (("", ids[i % 2]) if i < 2 else ("MKVLAAGIV", ""))
        level1, hpa_term = ("", "Nucleoplasm") if cell == "nls" else ("cytosol;nucleoplasm" if i < 3 else "", "")
        rows.append(f"hpa{cell},P{i % 4},{seq},{seq_id},{folder / 'nucleus.png'},{folder / 'ER.png'},"
                    f"{folder / 'microtubule.png'},{level1},{hpa_term},U2OS")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest, fasta


def test_build_from_real_hpa_samples(tmp_path: Path, shared_data: Path, capsys) -> None:
    manifest, fasta = hpa_manifest(tmp_path, shared_data)
    out = tmp_path / "store"
    code, stdout, stderr = run_cli(["dataset", "build", str(manifest), "--out", str(out), "--sequences", str(fasta),
                                    "--seed", "2", "--split", "0.5,0.25,0.25", "--quiet"], capsys)
    assert code == 0, stderr
    assert stdout.startswith(f"wrote {out}: 6 items, channels nucleus, er, microtubules, uint8 256x256")
    store = Store.open(out)
    assert store.channels == ("nucleus", "er", "microtubules") and store.image_dtype == "uint8"
    sequences = {r.id: r.sequence for r in read_sequences(fasta, max_length=None)}
    for i, cell in enumerate(["1", "2", "3", "4", "5", "nls"]):
        item = store[i]
        folder = shared_data / "celldiff_samples" / "hpa" / cell
        np.testing.assert_array_equal(item["images"]["er"], read_image(folder / "ER.png").channels["er"])
        np.testing.assert_array_equal(item["images"]["microtubules"],
                                      read_image(folder / "microtubule.png").channels["microtubules"])
        assert item["provenance"]["cell_line"] == "U2OS"
        if i < 2:
            assert item["sequence"] == sequences[list(sequences)[i % 2]]  # by sequence_id from the FASTA
    assert store[5]["sequence"] == NLS_GFP
    assert store[5]["labels"] == {"level1": ["nucleoplasm"], "level2": ["nucleus"], "level3": ["nucleus"],
                                  "subcell": ["Nucleoplasm"]}
    assert store[0]["labels"]["level1"] == ["cytosol", "nucleoplasm"] and store[3]["labels"] == {}
    proteins = {s: {store.protein_ids[i] for i in store.split_indices(s)} for s in ("train", "val", "test")}
    assert not (proteins["train"] & proteins["val"]) and not (proteins["train"] & proteins["test"])
    assert not (proteins["val"] & proteins["test"])

    code, stdout, _ = run_cli(["dataset", "info", str(out), "--json"], capsys)
    info = json.loads(stdout)
    assert code == 0 and info["n_items"] == 6 and info["n_proteins"] == 4
    assert info["labels"]["level1"] == {"nucleoplasm": 4, "cytosol": 3}
    assert sum(s["items"] for s in info["splits"].values()) == 6
    code, stdout, _ = run_cli(["dataset", "info", str(out)], capsys)
    assert code == 0 and "6 items, 4 proteins, uint8 256 x 256" in stdout

    # Export to the CELL-Diff layout and back from the command line.
    code, stdout, stderr = run_cli(["dataset", "export-lmdb", str(out), "--out", str(tmp_path / "lmdb"), "--quiet"], capsys)
    assert code == 0, stderr
    code, stdout, stderr = run_cli(["dataset", "import-lmdb", str(tmp_path / "lmdb"), "--out", str(tmp_path / "back"),
                                    "--quiet"], capsys)
    assert code == 0, stderr
    back = Store.open(tmp_path / "back")
    item = back[back.ids.index("hpanls")]
    np.testing.assert_array_equal(item["images"]["nucleus"], store[5]["images"]["nucleus"])
    assert item["sequence"] == NLS_GFP and item["split"] == store[5]["split"]


def test_image_column_and_yaml(tmp_path: Path, shared_data: Path) -> None:
    samples = shared_data / "celldiff_samples"
    csv = tmp_path / "folders.csv"
    csv.write_text("protein_id,sequence,image,split\n"
                   f"NLS,{NLS_GFP},{samples / 'hpa' / 'nls'},train\n"
                   f"NES,MLQNELALKLAGLDINKTG,{samples / 'opencell' / 'nes'},test\n")
    store = build_store_from_manifest(csv, tmp_path / "a", channels=["protein", "nucleus"], progress=False)
    assert store.channels == ("protein", "nucleus") and len(store) == 2
    assert [store[0]["split"], store[1]["split"]] == ["train", "test"]  # given splits are kept
    np.testing.assert_array_equal(store[1]["images"]["protein"],
                                  read_image(samples / "opencell" / "nes" / "protein.png").channels["protein"])

    yaml_manifest = tmp_path / "cells.yaml"
    yaml_manifest.write_text(
        "pixel_size_nm: 80\nchannels: [nucleus]\nitems:\n"
        + "".join(f"  - protein_id: P{i}\n    sequence: MKV\n    images: {{dapi: {samples / 'opencell' / str(i) / 'nucleus.png'}}}\n"
                  f"    labels: {{opencell_annotation: [nucleoplasm]}}\n" for i in range(1, 6)))
    store = build_store_from_manifest(yaml_manifest, tmp_path / "b", progress=False)
    assert len(store) == 5 and store.attrs["pixel_size_nm"] == 80.0 and store.channels == ("nucleus",)
    assert store[4]["labels"]["level1"] == ["nucleoplasm"]
    np.testing.assert_array_equal(store[2]["images"]["nucleus"],
                                  read_image(samples / "opencell" / "3" / "nucleus.png").channels["nucleus"])


def test_manifest_errors(tmp_path: Path, shared_data: Path, capsys) -> None:
    manifest, fasta = hpa_manifest(tmp_path, shared_data)
    lines = manifest.read_text().splitlines()
    lines[2] = lines[2].replace("hpa/2/ER.png", "hpa/2/missing.png")
    manifest.write_text("\n".join(lines) + "\n")
    missing = shared_data / "celldiff_samples" / "hpa" / "2" / "missing.png"
    out = tmp_path / "store"
    code, stdout, stderr = run_cli(["dataset", "build", str(manifest), "--out", str(out), "--sequences", str(fasta),
                                    "--quiet"], capsys)
    assert code == 2
    assert stderr.strip() == f"error: {manifest}: row 2 (line 3) column 'er': file not found: {missing}"
    assert not out.exists()
    # The interrupted build is incomplete, and says so.
    code, _, stderr = run_cli(["dataset", "info", str(out)], capsys)
    assert code == 2 and stderr.strip() == (f"error: {out}: incomplete store (an interrupted build left "
                                            f".store.partial); re-run the build to resume it")
    assert partial_path(out).exists()

    bad = tmp_path / "bad.csv"
    bad.write_text("protein_id,sequence,nucleus,golgi_image\nP1,MKV,a.png,b.png\n")
    with pytest.raises(InputError, match=r"bad\.csv: column 'golgi_image': unknown channel 'golgi'$"):
        parse_manifest(bad)
    bad.write_text("protein_id,sequence,nucleus\nP1,MKJV,a.png\n")
    with pytest.raises(InputError, match=r"row 1 \(line 2\) column 'sequence': record 'row1' position 3: invalid residue 'J'"):
        build_store_from_manifest(bad, tmp_path / "x", progress=False)
    with pytest.raises(InputError, match=r"bad\.csv: unknown channel 'golgi'$"):
        build_store_from_manifest(bad, tmp_path / "x", channels=["nucleus", "golgi"], progress=False)
    bad.write_text("protein_id,sequence_id,nucleus\nP1,Q99999,a.png\n")
    with pytest.raises(InputError, match=r"row 1 \(line 2\) column 'sequence_id': no sequence file given"):
        build_store_from_manifest(bad, tmp_path / "x", progress=False)
    bad.write_text("id,sequence,nucleus\nc1,MKV,a.png\n")
    with pytest.raises(InputError, match=r"bad\.csv: no 'protein_id' column \(columns: id, sequence, nucleus\)"):
        parse_manifest(bad)
    bad.write_text("protein_id,nucleus,level1\nP1,a.png,nucleus-ish\n")
    with pytest.raises(InputError, match=r"row 1 \(line 2\) column 'level1': level-1 class 'nucleus-ish' not recognised"):
        parse_manifest(bad)


def test_fixed_manifest_restarts_the_interrupted_build(tmp_path: Path, shared_data: Path) -> None:
    samples = shared_data / "celldiff_samples" / "opencell"
    manifest = tmp_path / "m.csv"
    rows = [f"P{i},MKV,{samples / str(i) / 'nucleus.png'}" for i in range(1, 5)]
    rows[2] = "P3,MKV,missing.png"
    manifest.write_text("protein_id,sequence,nucleus\n" + "\n".join(rows) + "\n")
    with pytest.raises(InputError, match=r"row 3 \(line 4\) column 'nucleus': file not found"):
        build_store_from_manifest(manifest, tmp_path / "s", progress=False)
    assert (partial_path(tmp_path / "s") / "items.jsonl").read_text().count("\n") == 2
    rows[0] = f"P1,MKV,{samples / '5' / 'nucleus.png'}"  # an edited earlier row must not be taken from the old build
    rows[2] = f"P3,MKV,{samples / '3' / 'nucleus.png'}"
    manifest.write_text("protein_id,sequence,nucleus\n" + "\n".join(rows) + "\n")
    store = build_store_from_manifest(manifest, tmp_path / "s", progress=False)
    assert len(store) == 4 and store.attrs["manifest_sha256"]
    np.testing.assert_array_equal(store[0]["images"]["nucleus"],
                                  read_image(samples / "5" / "nucleus.png").channels["nucleus"])
