"""``locscope simulate`` and ``locscope demo``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from locscope.cli import main


def run(args: list[str]) -> int:
    """Run the CLI like the console script; return its exit code."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return exit_info.value.code or 0


def test_simulate_command_writes_a_store(tmp_path, capsys):
    from locscope.data.store import Store

    assert run(["simulate", "--n", "5", "--size", "32", "--out", str(tmp_path / "s"), "--seed", "4", "--mode", "field",
                "--masks", "nucleoplasm,mitochondria"]) == 0
    store = Store.open(tmp_path / "s")
    assert len(store) == 5 and store.image_shape == (32, 32)
    assert tuple(store.mask_names) == ("nucleoplasm", "mitochondria")
    assert store.attrs["simulator"]["mode"] == "field"
    assert "wrote 5 cells" in capsys.readouterr().out


def test_simulate_command_label_faithful(tmp_path, shared_data):
    from locscope.data.store import Store

    table = shared_data / "localization_sequences" / "opencell_raw.csv"
    assert run(["simulate", "--n", "4", "--size", "32", "--out", str(tmp_path / "s"), "--sequences", str(table),
                "--cells-per-protein", "2", "--cell-painting"]) == 0
    store = Store.open(tmp_path / "s")
    assert {"dna", "rna", "agp", "mito"} <= set(store.channels)
    first, second = store[0], store[1]
    assert first["protein_id"] == second["protein_id"] and first["sequence"] == second["sequence"]
    assert first["provenance"]["source"] == "annotation"
    assert set(first["labels"]["level1"]) == set(first["provenance"]["annotated_level1"]) - {"plastid"}
    assert not np.array_equal(first["images"]["nucleus"], second["images"]["nucleus"])


def test_simulate_defaults_to_the_available_cores(tmp_path, monkeypatch):
    """No --workers: one process per available core (2 here, injected), capped at --n; the store is the same as with
    one worker."""
    import locscope.synth
    from locscope.data.store import Store
    from locscope.utils import cpu

    used = []
    real = locscope.synth.simulate_store

    def spy(*args, **kwargs):
        used.append(kwargs["workers"])
        return real(*args, **kwargs)

    monkeypatch.setattr(locscope.synth, "simulate_store", spy)
    monkeypatch.setattr(cpu, "available_cores", lambda: 2)
    common = ["--n", "6", "--size", "32", "--seed", "3", "--masks", "nucleoplasm"]
    assert run(["simulate", *common, "--out", str(tmp_path / "default")]) == 0
    assert run(["simulate", *common, "--out", str(tmp_path / "one"), "--workers", "1"]) == 0
    monkeypatch.setattr(cpu, "available_cores", lambda: 64)
    assert run(["simulate", "--n", "3", "--size", "32", "--masks", "none", "--out", str(tmp_path / "few")]) == 0
    assert used == [2, 1, 3]
    default, one = Store.open(tmp_path / "default"), Store.open(tmp_path / "one")
    assert default.ids == one.ids and len(default) == 6
    for i in range(6):
        a, b = default[i], one[i]
        assert a["sequence"] == b["sequence"] and a["labels"] == b["labels"]
        for name in a["images"]:
            np.testing.assert_array_equal(a["images"][name], b["images"][name])
        np.testing.assert_array_equal(a["masks"]["nucleoplasm"], b["masks"]["nucleoplasm"])


@pytest.mark.parametrize("args,message", [
    (["--n", "0"], "--n 0"),
    (["--mode", "tissue"], "--mode"),
    (["--sequences", "/no/such/file.csv"], "not found"),
    (["--size", "4"], "size"),
    (["--masks", "nucleoplasm,golgi"], "golgi"),
    (["--workers", "0"], "--workers 0: expected at least 1"),
])
def test_simulate_command_rejects_bad_options(tmp_path, capsys, args, message):
    assert run(["simulate", "--out", str(tmp_path / "s"), "--n", "2", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


def test_demo_writes_report(tmp_path):
    assert run(["demo", "--simulator", "--out", str(tmp_path / "demo"), "--size", "64"]) == 0
    payload = json.loads((tmp_path / "demo" / "results.json").read_text())
    calls = {r["name"]: set(r["compartments"]) for r in payload["examples"]}
    assert calls["NLS-EGFP"] == {"nucleoplasm"} and calls["mito-EGFP"] == {"mitochondria"}
    assert calls["ss-EGFP-KDEL"] == {"endoplasmic-reticulum"} and calls["EGFP-CAAX"] == {"plasma-membrane"}
    assert calls["EGFP"] == {"cytosol"} and calls["anchor-EGFP"] == {"golgi-apparatus"}
    assert (tmp_path / "demo" / "demo.png").stat().st_size > 10_000
    assert "NLS-EGFP" in (tmp_path / "demo" / "report.html").read_text()


def test_simulate_pipeline_names_its_python_arguments(tmp_path):
    from locscope.errors import ArgumentError
    from locscope.pipelines.simulate import mask_names_of, simulate

    assert mask_names_of("none") == () and mask_names_of(" nucleoplasm, cytosol ") == ("nucleoplasm", "cytosol")
    with pytest.raises(ArgumentError, match=r"^masks: unknown compartment\(s\) golgi; known: "):
        mask_names_of("nucleoplasm,golgi")
    with pytest.raises(ArgumentError, match=r"^n 0: expected at least 1$"):
        simulate(tmp_path / "s", 0)
    with pytest.raises(ArgumentError, match=r"^mode 'tissue': accepted values are crop, field$"):
        simulate(tmp_path / "s", 2, mode="tissue")
    assert not (tmp_path / "s").exists()
