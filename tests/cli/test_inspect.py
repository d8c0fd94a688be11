"""``locscope inspect``: channel names of the real samples, JSON output, one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from locscope.cli import app

runner = CliRunner()


def _json(*args: str) -> list[dict]:
    result = runner.invoke(app, ["inspect", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_inspect_celldiff_hpa_names_channels(shared_data):
    folder = shared_data / "celldiff_samples" / "hpa" / "1"
    (summary,) = _json(*[str(p) for p in sorted(folder.glob("*.png"))])
    assert summary["format"] == "celldiff-sample" and summary["shape"] == [256, 256]
    assert [c["name"] for c in summary["channels"]] == ["er", "microtubules", "nucleus"]
    assert summary["files"] == {"er": "ER.png (yellow)", "microtubules": "microtubule.png (red)",
                                "nucleus": "nucleus.png (blue)"}
    assert {c["name"]: c["max"] for c in summary["channels"]} == {"er": 231.0, "microtubules": 255.0, "nucleus": 255.0}
    table = runner.invoke(app, ["inspect", *[str(p) for p in sorted(folder.glob("*.png"))]])
    assert table.exit_code == 0
    for expected in ("celldiff-sample", "256 x 256", "er", "microtubules", "nucleus", "ER.png (yellow)", "uint8"):
        assert expected in table.stdout


def test_inspect_mixed_inputs_keep_order(shared_data):
    summaries = _json(
        str(shared_data / "deeploc1" / "deeploc_our_val_set.fasta"), "--truncate",
        str(shared_data / "opencell_raw_tiff" / "A1_1_ATL2__mock.ome.tif"),
        str(shared_data / "proticelli_landmarks" / "RELA_A-431" / "cell_9.tiff"),
        str(shared_data / "opencell_hpa_labels" / "hpa_subcellular_location.tsv"),
    )
    assert [s["kind"] for s in summaries] == ["sequences", "image", "image", "labels"]
    seqs, raw, landmarks, labels = summaries
    assert seqs["n_records"] == 1678 and seqs["max_length"] == 2048 and seqs["n_truncated"] == 18
    assert seqs["records"][0] == {"id": "Q9Y4C2", "length": 921, "original_length": 921,
                                  "labels": ["Cell.membrane"], "membrane": True}
    assert raw["format"] == "micromanager-tiff" and raw["z_slices"] == 51
    assert raw["identified_by"] == {"nucleus": "405 nm laser", "protein": "488 nm laser"}
    assert landmarks["shape"] == [456, 512]
    assert [c["name"] for c in landmarks["channels"]] == ["microtubules", "protein", "nucleus", "er"]
    assert labels["n_records"] == 12813 and labels["level1_counts"]["nucleoplasm"] > 5000


def test_inspect_max_length_option(tmp_path):
    fasta = tmp_path / "s.fasta"
    fasta.write_text(">a\n" + "M" * 50 + "\n")
    (summary,) = _json(str(fasta), "--max-length", "20", "--truncate")
    assert summary["records"][0]["length"] == 20 and summary["records"][0]["original_length"] == 50


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "locscope", *args], capture_output=True, text=True)


def test_inspect_bad_file_exit_2_one_line(tmp_path):
    bad = tmp_path / "nucleus.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    result = _cli("inspect", str(bad))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {bad}: truncated or corrupt PNG file"]
    assert "Traceback" not in result.stderr
    fasta = tmp_path / "s.fasta"
    fasta.write_text(">x\nMKVJ\n")
    result = _cli("inspect", str(fasta))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {fasta}: record 'x' position 4: invalid residue 'J' (accepted: 20 standard amino acids + X B Z U O)"]


def test_inspect_celldiff_lmdb(tmp_path, shared_data):
    from locscope.io import read_image
    from locscope.io.celldiff_lmdb import write_celldiff_lmdb

    sample = read_image(shared_data / "celldiff_samples" / "hpa" / "nls")
    items = [{"id": f"c{i}", "protein_id": f"P{i}", "sequence": "MPKKKRKV" * (i + 1), "images": dict(sample.channels),
              "labels": {}, "split": "train" if i else "test", "provenance": {}} for i in range(3)]
    write_celldiff_lmdb(tmp_path / "db", items, progress=False)
    (summary,) = _json(str(tmp_path / "db"))
    assert summary["kind"] == "lmdb" and summary["n_items"] == 3
    assert summary["splits"] == {"test": 1, "train": 2}
    assert (summary["min_sequence_length"], summary["max_sequence_length"]) == (8, 24)
    nucleus = [c for c in summary["channels"] if c["name"] == "nucleus"][0]
    assert nucleus["shape"] == [256, 256] and nucleus["max"] == 255.0


def test_inspect_crop_stack_and_plain_folder(tmp_path, rng):
    import imagecodecs
    import numpy as np

    crops = rng.integers(0, 1000, (4, 100, 100, 2), dtype=np.uint16)
    np.save(tmp_path / "crops.npy", crops)
    (summary,) = _json(str(tmp_path / "crops.npy"))
    assert summary["kind"] == "crops" and summary["shape"] == [4, 100, 100, 2]
    assert [c["name"] for c in summary["channels"]] == ["protein", "nucleus"]
    assert summary["channels"][1]["max"] == float(crops[..., 1].max())
    table = runner.invoke(app, ["inspect", str(tmp_path / "crops.npy")])
    assert table.exit_code == 0 and "4 x 100 x 100 x 2 crops" in table.stdout
    # a folder of HPA channel files is expanded and grouped into fields of view
    folder = tmp_path / "hpa"
    folder.mkdir()
    for fov in ("10_A1_1", "10_A1_2"):
        for colour in ("red", "green", "blue", "yellow"):
            (folder / f"{fov}_{colour}.png").write_bytes(imagecodecs.png_encode(rng.integers(0, 255, (8, 8), dtype=np.uint8)))
    summaries = _json(str(folder))
    assert [s["format"] for s in summaries] == ["hpa-fov", "hpa-fov"]
    assert [c["name"] for c in summaries[0]["channels"]] == ["nucleus", "protein", "microtubules", "er"]  # file order
