"""``locscope generate``: outputs, determinism, landmarks handling, compartment fractions and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from locscope.cli import main
from locscope.models.celldiff import CellDiff, celldiff_tiny_config
from locscope.data.transforms import to_unit_range
from locscope.pipelines.generate import probability_map, read_landmarks
from locscope.pipelines.readout import compartment_fractions

EXAMPLES = Path(__file__).resolve().parents[2] / "src" / "locscope" / "assets" / "examples"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = CellDiff(celldiff_tiny_config(image_size=16, channels=(8, 8, 16, 16), transformer_width=32,
                                          transformer_layers=1, sequence_dim=16, sequence_layers=1))
    with torch.no_grad():
        model.out_conv.weight.normal_(0, 0.05)  # the zero-initialised output layer would give flat images
    path = tmp_path_factory.mktemp("model") / "tiny"
    model.save_pretrained(path)
    return path


def run(args: list[str]) -> int:
    try:
        main(args)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def test_generate_writes_everything_and_is_seeded(model_dir, tmp_path):
    args = ["generate", "--fasta", str(EXAMPLES / "proteins.fasta"), "--landmarks", str(EXAMPLES / "landmarks" / "cell_1"),
            "--model", str(model_dir), "--steps", "2", "--samples", "2", "--device", "cpu"]
    assert run(args + ["--out", str(tmp_path / "a")]) == 0
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert [s["id"] for s in summary["sequences"]][:2] == ["example_nuclear", "example_mitochondrial"]
    assert summary["network_evaluations_per_image"] == 4  # 2 steps x 2 (guidance 2 runs cond + uncond)
    folder = tmp_path / "a" / "example_nuclear"
    for name in ("sample_0.png", "sample_1.tif", "mean.png", "mean.tif", "probability.png", "landmarks.png",
                 "overlay.png", "result.json"):
        assert (folder / name).is_file(), name
    tif = tifffile.imread(folder / "sample_0.tif")
    assert tif.dtype == np.uint16 and tif.shape == (16, 16)
    fractions = summary["sequences"][0]["compartment_fractions"]  # the bundled cell carries simulator masks
    assert fractions and sum(fractions.values()) == pytest.approx(1.0, abs=1e-6)
    assert (tmp_path / "a" / "report.html").read_text().count("<tr>") == 1 + 5
    assert run(args + ["--out", str(tmp_path / "b")]) == 0
    assert np.array_equal(tif, tifffile.imread(tmp_path / "b" / "example_nuclear" / "sample_0.tif"))
    # the fraction head's level-1 distribution is recorded; --compartment places the protein elsewhere
    conditioned = summary["sequences"][0]["conditioned_on"]
    assert conditioned["source"] == "fraction head" and conditioned["level1"]
    assert run(args + ["--out", str(tmp_path / "c"), "--compartment", "mitochondria:3,cytosol:1"]) == 0
    forced = json.loads((tmp_path / "c" / "summary.json").read_text())["sequences"][0]["conditioned_on"]
    assert forced == {"source": "--compartment", "level1": {"mitochondria": 0.75, "cytosol": 0.25}}
    assert not np.array_equal(tif, tifffile.imread(tmp_path / "c" / "example_nuclear" / "sample_0.tif"))
    assert run(args + ["--out", str(tmp_path / "d"), "--placement", "top"]) == 0
    assert json.loads((tmp_path / "d" / "summary.json").read_text())["placement"] == "top"
    assert not np.array_equal(tif, tifffile.imread(tmp_path / "d" / "example_nuclear" / "sample_0.tif"))


@pytest.mark.parametrize("extra,message", [
    (["--sequence", "MKV1L"], "invalid residue '1'"),
    (["--sequence", "MKV", "--sampler", "euler"], "--sampler 'euler'"),
    ([], "exactly one of --sequence"),
    (["--sequence", "MKV", "--compartment", "nucleous"], "unknown compartment 'nucleous'"),
    (["--sequence", "MKV", "--compartment", "cytosol:x"], "weight 'x' of 'cytosol'"),
    (["--sequence", "MKV", "--compartment", "cytosol:0"], "the weights sum to 0"),
    (["--sequence", "MKV", "--placement", "argmax"], "--placement 'argmax'"),
])
def test_generate_bad_input_is_one_line(model_dir, tmp_path, capsys, extra, message):
    code = run(["generate", "--landmarks", str(EXAMPLES / "landmarks" / "cell_1"), "--model", str(model_dir),
                "--out", str(tmp_path / "o"), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1


def test_landmarks_as_several_files_after_one_option(model_dir, tmp_path, capsys):
    """``--landmarks a b c`` (as a shell glob expands), a repeated ``--landmarks`` and the folder give the same cell."""
    cell = EXAMPLES / "landmarks" / "cell_1"
    files = [str(cell / name) for name in ("nucleus.png", "ER.png", "microtubule.png")]
    common = ["generate", "--sequence", "MKV", "--model", str(model_dir), "--steps", "1", "--samples", "1",
              "--device", "cpu"]
    spaced = [*common, "--landmarks", *files, "--out", str(tmp_path / "spaced")]
    repeated = [*common, *(arg for f in files for arg in ("--landmarks", f)), "--out", str(tmp_path / "repeated")]
    folder = [*common, "--landmarks", str(cell), "--out", str(tmp_path / "folder")]
    assert run(spaced) == run(repeated) == run(folder) == 0
    summaries = {name: json.loads((tmp_path / name / "summary.json").read_text()) for name in ("spaced", "repeated")}
    assert summaries["spaced"]["landmarks"] == summaries["repeated"]["landmarks"] == ", ".join(files)
    images = [tifffile.imread(tmp_path / name / "sequence" / "sample_0.tif") for name in ("spaced", "repeated", "folder")]
    assert np.array_equal(images[0], images[1]) and np.array_equal(images[0], images[2])
    # files without the option, or no landmarks at all: one line saying how to give them
    capsys.readouterr()
    assert run([*common, *files, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {files[0]}: landmark files are given with --landmarks; --landmarks a.png b.png c.png "
                   "(one option, several files), a repeated --landmarks, or a folder")
    assert run([*common, "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip().startswith("error: give landmark images: --landmarks a.png b.png c.png")
    assert not (tmp_path / "o").exists()


def test_missing_model_directory_is_an_input_error(tmp_path, capsys):
    code = run(["generate", "--sequence", "MKV", "--landmarks", str(EXAMPLES / "landmarks" / "cell_1"),
                "--model", str(tmp_path / "none"), "--out", str(tmp_path / "o")])
    assert code == 2 and "no model at" in capsys.readouterr().err


def test_landmarks_resized_subset_and_float_range(tmp_path):
    stack = np.linspace(-1, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    tifffile.imwrite(tmp_path / "nucleus.tif", stack)
    cell = read_landmarks([tmp_path / "nucleus.tif"], ("nucleus", "er", "microtubules"), 16)
    assert cell.images.shape == (3, 16, 16) and cell.present.tolist() == [True, False, False]
    assert 0.0 <= cell.images[0].min() < 0.05 and 0.95 < cell.images[0].max() <= 1.0  # [-1, 1] -> [0, 1]
    assert to_unit_range(np.array([0, 65535], np.uint16)).tolist() == [0.0, 1.0]


def test_compartment_fractions_and_probability_map():
    masks = {"nucleoplasm": np.zeros((8, 8), bool), "cytosol": np.ones((8, 8), bool)}
    masks["nucleoplasm"][2:6, 2:6] = True  # the smaller (more specific) mask owns its pixels
    image = np.zeros((8, 8))
    image[2:6, 2:6] = 3.0
    image[0, :] = 1.0
    shares = compartment_fractions(image, masks)
    assert shares["nucleus"] == pytest.approx(48 / 56) and shares["cytosol"] == pytest.approx(8 / 56)
    stack = np.zeros((4, 8, 8))
    stack[:, :2] = 1.0
    stack[:2, 6:] = 1.0
    prob = probability_map(stack)
    assert prob[0, 0] == 1.0 and prob[7, 7] == 0.5 and prob[4, 4] == 0.0
