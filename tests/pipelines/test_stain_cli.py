"""``locscope stain``: outputs, the released checkpoint through the hub, one-line errors that write nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from locscope.cli import main
from locscope.models import hub
from locscope.pipelines.stain import read_brightfield, to_uint16

from conftest import SHARED, _require
from support import _one_thread  # noqa: F401  (autouse: one torch thread for these tiny networks)


@pytest.fixture(scope="module")
def network():
    return _require(SHARED / "golden" / "guided_i2i_tiny") / "1_Network.pth"


@pytest.fixture
def planes(tmp_path, network):
    raw = np.load(network.parent / "input_raw_uint16.npy")  # (2, 8, 32, 32): C01..C05, then 3 brightfield planes
    tifffile.imwrite(tmp_path / "a.tif", raw[0, 5:])
    tifffile.imwrite(tmp_path / "b.tif", raw[1, 5:])
    (tmp_path / "per_plane").mkdir()
    for i in range(3):
        tifffile.imwrite(tmp_path / "per_plane" / f"plane{i}.tif", raw[0, 5 + i])
    return tmp_path


def test_released_network_resolves_through_the_hub(network):
    ref = hub.resolve(str(network), families=("stain",))
    assert ref.family == "stain"
    model = ref.load("cpu")
    assert model.config.classes == ("class-0", "class-1", "class-2", "class-3")


def test_read_brightfield_stacks_and_planes(planes):
    stacks = read_brightfield([planes / "a.tif", planes / "b.tif"], 3)
    assert [name for name, _ in stacks] == ["a", "b"] and stacks[0][1].shape == (3, 32, 32)
    per_plane = read_brightfield([planes / "per_plane"], 3)
    assert len(per_plane) == 1
    np.testing.assert_array_equal(per_plane[0][1], stacks[0][1])


def test_stain_writes_tiffs_composite_and_report(planes, network, capsys):
    out = planes / "out"
    with pytest.raises(SystemExit) as info:
        main(["stain", "--brightfield", str(planes / "a.tif"), "--brightfield", str(planes / "b.tif"), "--model",
              str(network), "--class", "class-1", "--sampler", "ddim", "--steps", "4", "--samples", "2", "--out",
              str(out)])
    assert info.value.code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["network_evaluations_per_image"] == 4 and summary["class_index"] == 1
    assert [row["folder"] for row in summary["images"]] == ["a", "b"]
    for channel in ("dna", "rna", "er", "agp", "mito"):
        image = tifffile.imread(out / "a" / f"{channel}_sample1.tif")
        assert image.dtype == np.uint16 and image.shape == (32, 32)
    assert (out / "a" / "composite_sample0.png").is_file() and (out / "b" / "brightfield.png").is_file()
    assert "class-1" in (out / "report.html").read_text()
    assert to_uint16(np.array([-15.0, 0.0, 15.0, 99.0])).tolist() == [0, 32768, 65535, 65535]


@pytest.mark.parametrize("args,message", [
    (["--brightfield", "{two}"], "two.tif: 2 brightfield plane(s); the model takes 3 per image"),
    (["--brightfield", "{a}", "--brightfield", "{small}"], "brightfield images differ in size (a.tif 32x32, small.tif 16x16)"),
    (["--brightfield", "{a}", "--class", "drug"], "--class 'drug': not a class of this model; known classes: class-0, "
                                                  "class-1, class-2, class-3"),
    (["--brightfield", "{a}", "--class", "class-1", "--classifier-scale", "2"], "has no classifier"),
    (["--brightfield", "{a}", "--classifier-scale", "2"], "give --class"),
    (["--brightfield", "{a}", "--sampler", "euler"], "--sampler euler: accepted values are ddpm, ddim, dpmsolver"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(planes, network, capsys, args, message):
    raw = np.load(network.parent / "input_raw_uint16.npy")
    tifffile.imwrite(planes / "two.tif", raw[0, 5:7])
    tifffile.imwrite(planes / "small.tif", raw[0, 5:, :16, :16])
    names = {"two": planes / "two.tif", "a": planes / "a.tif", "small": planes / "small.tif"}
    out = planes / "bad"
    with pytest.raises(SystemExit) as info:
        main(["stain", *[a.format(**names) for a in args], "--model", str(network), "--out", str(out)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in " ".join(err.split()) and "Traceback" not in err
    assert not out.exists() and not any(p.name.startswith(".bad") for p in planes.iterdir())


def test_read_brightfield_from_a_simulator_store(tmp_path):
    from locscope.errors import InputError
    from locscope.synth import SimulatorConfig, simulate_store

    store = simulate_store(tmp_path / "cells", 3, SimulatorConfig(size=16, brightfield=True, cell_painting=True,
                                                                  perturbation="random"), seed=0)
    images = read_brightfield([tmp_path / "cells"], 1)
    assert [name for name, _ in images] == [str(store[i]["id"]) for i in range(3)]
    assert images[0][1].shape == (1, 16, 16)
    with pytest.raises(InputError, match="a store holds 1 brightfield plane per cell; the model takes 3"):
        read_brightfield([tmp_path / "cells"], 3)


def test_bundled_stain_tiny_stains_a_store_and_evaluate_scores_it(tmp_path, capsys):
    from locscope.synth import SimulatorConfig, simulate_store

    cells = tmp_path / "cells"
    simulate_store(cells, 6, SimulatorConfig(size=32, brightfield=True, cell_painting=True, perturbation="random"),
                   seed=3)
    out = tmp_path / "stained"
    with pytest.raises(SystemExit) as info:  # no --model: the bundled stain-tiny
        main(["stain", "--brightfield", str(cells), "--steps", "10", "--out", str(out)])
    assert info.value.code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "stain-tiny" and summary["network_evaluations_per_image"] == 10
    assert len(summary["images"]) == 6 and (out / summary["images"][0]["folder"] / "mito.tif").is_file()

    guided = tmp_path / "guided"  # its classifier ships with it
    with pytest.raises(SystemExit) as info:
        main(["stain", "--brightfield", str(cells), "--class", "fragmented-mitochondria", "--classifier-scale", "2",
              "--steps", "4", "--out", str(guided)])
    assert info.value.code == 0
    assert json.loads((guided / "summary.json").read_text())["classifier_evaluations_per_image"] == 4

    report = tmp_path / "report"
    with pytest.raises(SystemExit) as info:
        main(["evaluate", "--real", str(cells), "--generated", str(out), "--features", "handcrafted", "--out",
              str(report)])
    assert info.value.code == 0
    metrics = json.loads((report / "metrics.json").read_text())
    values = metrics["set_metrics"]
    assert metrics["summary"]["n_pairs"] == 6 and metrics["summary"]["labelled_pairs"] == 6
    assert values["pcc_dna"] > 0.3 and values["pcc"] > 0.1  # the trained model predicts the nuclei
    for name in ("ssim", "mse", "mae", "fid", "fid_mito", "nn_match", "nn_top5", "mt_dist", "real_nn_match", "cp_cor"):
        assert np.isfinite(values[name]), name
    assert (report / "channels.png").is_file() and (report / "pictures" / "000_stained.png").is_file()
    assert "pcc_agp" in (report / "items.csv").read_text().splitlines()[0]

    plain = tmp_path / "plain"  # real images without the stained channels: one line, nothing written
    simulate_store(plain, 2, SimulatorConfig(size=32), seed=0)
    with pytest.raises(SystemExit) as info:
        main(["evaluate", "--real", str(plain), "--generated", str(out), "--out", str(tmp_path / "bad")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "store lacks channel(s) dna, rna" in err and "Traceback" not in err
    assert not (tmp_path / "bad").exists()
