"""``locscope evaluate``: folders of real sample images, a simulated-truth store, user errors."""

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from locscope.cli import app

from locscope.errors import InputError
from locscope.pipelines.evaluate import evaluate, open_source, to_unit_range

SAMPLES = ("hpa/nls", "opencell/nls", "opencell/nes")


def _sample_folder(shared_data, root, swap_opencell=False):
    """A folder of CELL-Diff sample folders (copied to tmp); optionally the OpenCell proteins swapped."""
    for name in SAMPLES:
        (root / name).mkdir(parents=True)
        for f in (shared_data / "celldiff_samples" / name).iterdir():
            shutil.copy(f, root / name / f.name)
    if swap_opencell:
        src = shared_data / "celldiff_samples" / "opencell"
        shutil.copy(src / "nes" / "protein.png", root / "opencell" / "nls" / "protein.png")
        shutil.copy(src / "nls" / "protein.png", root / "opencell" / "nes" / "protein.png")
    return root


def test_identical_folders_score_perfectly(shared_data, tmp_path):
    real = _sample_folder(shared_data, tmp_path / "real")
    result = evaluate(real, real, tmp_path / "report", pixel_size_nm=320, progress=False, max_pictures=2)  # auto network
    assert result.summary["n_pairs"] == 3
    for name in ("iou", "ssim_protein", "pcc_protein"):
        assert result.per_metric[name]["mean"] == pytest.approx(1.0)
    assert result.per_metric["mae_protein"]["mean"] == 0.0
    assert result.per_metric["msf_real_nm"]["mean"] == pytest.approx(640.0)   # 8-bit images saturate at 2 px
    assert result.set_metrics["fid_o"] == pytest.approx(0.0, abs=1e-6)
    assert result.set_metrics["fid_t"] == pytest.approx(0.0, abs=1e-6)
    assert result.set_metrics["nn_match_top1"] == 1.0
    out = tmp_path / "report"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["summary"]["feature_network"] == result.summary["feature_network"]
    rows = list(csv.DictReader((out / "items.csv").open()))
    assert [r["id"] for r in rows] == ["hpa/nls", "opencell/nes", "opencell/nls"]
    page = (out / "report.html").read_text()
    assert page.count("<img src='pictures/") == 2 * 6 and "histograms.png" in page
    for name in ("histograms.png", "pictures/0000_real.png", "pictures/0001_overlap.png"):
        assert (out / name).stat().st_size > 0


def test_swapped_proteins_reproduce_golden_iou(shared_data, shared_golden, tmp_path):
    real = _sample_folder(shared_data, tmp_path / "real")
    generated = _sample_folder(shared_data, tmp_path / "generated", swap_opencell=True)
    cli = CliRunner().invoke(app, ["evaluate", "--real", str(real), "--generated", str(generated), "--out",
                                   str(tmp_path / "report"), "--features", "handcrafted", "--max-pictures", "0"])
    assert cli.exit_code == 0, cli.output
    assert "3 pairs; features: handcrafted-v1" in cli.output and "report:" in cli.output
    set_metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())["set_metrics"]
    rows = list(csv.DictReader((tmp_path / "report" / "items.csv").open()))
    by_id = {row["id"]: {k: float(v) for k, v in row.items() if k != "id" and v} for row in rows}
    expected = json.loads((shared_golden / "metrics" / "expected.json").read_text())
    assert by_id["opencell/nls"]["iou"] == pytest.approx(expected["iou_opencell_nls_vs_nes_protein"], abs=1e-7)  # golden: float32
    assert by_id["hpa/nls"]["iou"] == 1.0
    assert by_id["opencell/nls"]["pcc_protein"] < 0.5
    assert set_metrics["fid_o"] > 0.1
    assert "msf_real_px" in by_id["hpa/nls"]    # no pixel size in PNGs: MSF in pixels


def test_generate_output_layout_pairs_with_real_folders(shared_data, tmp_path):
    import tifffile
    from PIL import Image

    real = _sample_folder(shared_data, tmp_path / "real")
    protein = np.asarray(Image.open(real / "opencell" / "nls" / "protein.png").convert("L"))
    out = tmp_path / "generated" / "opencell" / "nls"      # what `locscope generate` writes per sequence
    out.mkdir(parents=True)
    tifffile.imwrite(out / "sample_0.tif", protein.astype(np.uint16) * 257)          # exact 16-bit copy
    Image.fromarray(np.kron(protein, np.ones((4, 4), np.uint8))).save(out / "sample_0.png")   # upscaled preview
    Image.fromarray(255 - protein).save(out / "mean.png")
    Image.fromarray(protein).save(out / "landmarks.png")
    assert list(open_source(tmp_path / "generated").ids) == ["opencell/nls"]
    result = evaluate(real, tmp_path / "generated", tmp_path / "report", features="handcrafted", progress=False,
                      max_pictures=1)
    assert result.summary["n_pairs"] == 1 and result.summary["n_real_only"] == 2
    assert result.rows[0]["iou"] == 1.0 and result.rows[0]["mae_protein"] == pytest.approx(0.0, abs=1e-12)


def _store_items(rng, noise):
    classes = {"nucleoplasm": (slice(8, 24), slice(8, 24)), "cytosol": (slice(0, 32), slice(0, 8))}
    items = []
    for i in range(8):
        label = list(classes)[i % 2]
        masks = {name: np.zeros((32, 32), bool) for name in classes}
        for name, region in classes.items():
            masks[name][region] = True
        protein = masks[label] * 0.8 + rng.random((32, 32)) * noise
        nucleus = masks["nucleoplasm"] * 0.9
        items.append({
            "id": f"cell{i}", "protein_id": f"P{i}", "sequence": "MKV",
            "images": {"protein": (protein / protein.max() * 65535).astype(np.uint16),
                       "nucleus": (nucleus * 65535).astype(np.uint16)},
            "masks": masks, "labels": {"level1": [label]}, "provenance": {},
        })
    return items


@pytest.fixture(scope="module")
def store_pair(tmp_path_factory):
    """A real and a generated store with truth masks and labels, and the handcrafted-feature evaluation of the pair
    (written to ``report``)."""
    from locscope.data.store import write_store

    tmp_path = tmp_path_factory.mktemp("stores")
    rng = np.random.default_rng(0)
    kwargs = dict(channels=("protein", "nucleus"), image_shape=(32, 32), mask_names=("nucleoplasm", "cytosol"),
                  attrs={"pixel_size_nm": 100.0}, progress=False)
    write_store(tmp_path / "real", _store_items(rng, 0.05), **kwargs)
    write_store(tmp_path / "gen", _store_items(rng, 0.1), **kwargs)
    result = evaluate(tmp_path / "real", tmp_path / "gen", tmp_path / "report", features="handcrafted", progress=False)
    return tmp_path, result


def test_store_with_truth_masks_and_labels(store_pair):
    tmp_path, result = store_pair
    assert open_source(tmp_path / "real").kind == "store"
    assert result.summary["feature_network"] == "handcrafted-v1"
    assert result.summary["pixel_size_nm"] == 100.0
    assert result.per_metric["localization_fidelity"]["mean"] > 0.5
    assert result.per_metric["iou_vs_truth"]["mean"] == pytest.approx(0.5)   # median mask: 512 px vs 256 true px
    assert result.per_metric["iou_vs_truth_otsu"]["mean"] > 0.9
    assert result.set_metrics["classification_accuracy"] == 1.0
    assert result.confusion["classes"] == ["cytosol", "nucleoplasm"]
    assert (tmp_path / "report" / "confusion.png").exists()


def test_user_errors(tmp_path, shared_data):
    real = _sample_folder(shared_data, tmp_path / "real")
    other = tmp_path / "other"
    (other / "x").mkdir(parents=True)
    shutil.copy(shared_data / "celldiff_samples" / "hpa" / "1" / "nucleus.png", other / "x" / "nucleus.png")
    with pytest.raises(InputError, match="no item ids in common"):
        evaluate(real, other, tmp_path / "report", progress=False)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("user data")
    with pytest.raises(InputError, match="not an earlier `locscope evaluate` output"):
        evaluate(real, real, busy, progress=False)
    assert (busy / "keep.txt").read_text() == "user data"
    with pytest.raises(InputError, match="expected \\[0, 1\\] or \\[-1, 1\\]"):
        to_unit_range(np.array([[0.0, 3.0]]), "x.tif")
    np.testing.assert_allclose(to_unit_range(np.array([[-1.0, 1.0]]), "x"), [[0.0, 1.0]])
    cli = subprocess.run([sys.executable, "-m", "locscope", "evaluate", "--real", str(tmp_path / "missing"),
                          "--generated", str(real), "--out", str(tmp_path / "r2")], capture_output=True, text=True)
    assert cli.returncode == 2
    assert "missing: not found" in cli.stderr and "Traceback" not in cli.stderr
    assert not (tmp_path / "r2").exists()


def test_histograms_of_values_equal_up_to_rounding(tmp_path):
    from types import SimpleNamespace

    from locscope.pipelines.evaluate_report import _histograms

    rows = [{"pcc_protein": 1.0 - 2e-16}, {"pcc_protein": 1.0}, {"pcc_protein": 1.0}, {"pcc_protein": float("nan")}]
    result = SimpleNamespace(rows=rows, per_metric={"pcc_protein": {"n": 3}})
    assert _histograms(result, tmp_path / "histograms.png") and (tmp_path / "histograms.png").stat().st_size > 0


def test_compartment_accuracy_by_the_readout_and_on_real_images(store_pair, tmp_path):
    """proteoscope's headline metric: the classifier's accuracy on the real images next to the generated ones."""
    from locscope.pipelines.readout import load_readout

    stores, result = store_pair
    metrics = result.set_metrics
    assert metrics["classification_accuracy_real"] == 1.0   # cross-validated on the real features
    if load_readout() is None:
        pytest.skip("the bundled compartment read-out is not installed")
    assert 0.0 <= metrics["compartment_accuracy_generated"] <= 1.0
    # the same classifier reads both sides: generated = real gives the real images' accuracy
    same = evaluate(stores / "real", stores / "real", tmp_path / "r1", features="handcrafted", progress=False)
    assert same.set_metrics["compartment_accuracy_generated"] == same.set_metrics["compartment_accuracy_real"]
    assert same.set_metrics["compartment_accuracy_real"] == metrics["compartment_accuracy_real"]
    skipped = evaluate(stores / "real", stores / "gen", tmp_path / "r2", features="handcrafted", readout=None,
                       progress=False)
    assert "compartment_accuracy_real" not in skipped.set_metrics
