"""Nothing lost, nothing escapes: the output-folder policy of every command, the store build lock and the
id-to-file-name rule."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import typer.main

from locscope.cli import app
from locscope.utils.filenames import file_name_for_id
from locscope.utils.outputs import MARKER, written_by

from conftest import error_line


EXAMPLES = Path(__file__).resolve().parents[1] / "src" / "locscope" / "assets" / "examples"
LANDMARKS = str(EXAMPLES / "landmarks" / "cell_1")


def unrelated_folder(path: Path) -> Path:
    """A user's project folder: what export-lmdb used to delete."""
    (path / "src").mkdir(parents=True)
    (path / "src" / "main.py").write_text("print('hello')\n")
    (path / "data").mkdir()
    (path / "data" / "raw.csv").write_text("a,b\n1,2\n")
    return path


def assert_untouched(path: Path) -> None:
    assert (path / "src" / "main.py").read_text() == "print('hello')\n"
    assert (path / "data" / "raw.csv").read_text() == "a,b\n1,2\n"
    assert sorted(p.name for p in path.iterdir()) == ["data", "src"]
    assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith(".")) == []  # no temp folder left


# ------------------------------------------------------------------------------------------------ id -> file name
@pytest.mark.parametrize("record_id", ["..", ".", "a/b", "a_b", "/etc/passwd", "", "~", "A" * 200, ".hidden",
                                       "x/../..", "a\\b", "é", "P04637", "sp|P04637|P53_HUMAN"])
def test_file_name_is_a_plain_name(record_id):
    name = file_name_for_id(record_id)
    assert name not in ("", ".", "..") and "/" not in name and "\\" not in name and not name.startswith(".")
    assert not Path(name).is_absolute() and len(name) <= 100
    assert Path("out", name).resolve().parent == Path("out").resolve()


def test_file_names_are_injective_and_keep_safe_ids():
    ids = ["..", ".", "a/b", "a_b", "a:b", "a b", "_", "__", "A" * 200, "A" * 201, "P04637", "sp|P04637|P53_HUMAN",
           "sp_P04637_P53_HUMAN"]
    names = [file_name_for_id(i) for i in ids]
    assert len(set(names)) == len(ids)
    assert file_name_for_id("a_b") == "a_b" and file_name_for_id("P04637") == "P04637"
    assert file_name_for_id("a/b").startswith("a_b~") and file_name_for_id("..").startswith("__~")
    assert file_name_for_id("a/b") == file_name_for_id("a/b")  # the same id always gets the same name


def test_embed_ids_a_slash_b_and_a_underscore_b_get_their_own_files(tmp_path):
    from locscope.pipelines.embed import EmbeddingResult, write_embedding_outputs

    ids = ["a/b", "a_b", ".."]
    result = EmbeddingResult(ids, np.arange(6, dtype=np.float32).reshape(3, 2), None, [], ("x",), [])
    out = tmp_path / "run" / "out"
    written = write_embedding_outputs(result, out, save_npy=True)
    npy = sorted(p for p in written if p.suffix == ".npy")
    assert len(npy) == 3 and all(p.parent == out and p.is_file() for p in npy)
    assert [np.load(out / f"{file_name_for_id(i)}_embedding.npy").tolist() for i in ids] == [[0, 1], [2, 3], [4, 5]]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["out"]


def test_generate_record_named_dot_dot_stays_inside_out(tmp_path, cli):
    fasta = tmp_path / "two.fasta"
    fasta.write_text(">..\nMPKKKRKVEDA\n>a/b\nMLSLRQSIRFFKPATRTLCSSRYLL\n>a_b\nMPKKKRKVEDA\n")
    run_dir = tmp_path / "run"
    (run_dir / "out").mkdir(parents=True)
    (run_dir / "result.json").write_text("keep")
    code, _, err = cli(["generate", "--fasta", fasta, "--landmarks", LANDMARKS, "--out", run_dir / "out", "--steps", "1",
                     "--samples", "1", "--device", "cpu"])
    assert code == 0, err
    assert (run_dir / "result.json").read_text() == "keep"
    assert sorted(p.name for p in run_dir.iterdir()) == ["out", "result.json"]
    summary = json.loads((run_dir / "out" / "summary.json").read_text())
    folders = [entry["folder"] for entry in summary["sequences"]]
    assert folders == [file_name_for_id(i) for i in ("..", "a/b", "a_b")] and len(set(folders)) == 3
    for folder in folders:
        assert (run_dir / "out" / folder / "result.json").is_file()


# -------------------------------------------------------------------------------------------- output folder policy
def test_export_lmdb_never_deletes_an_unrelated_folder(tmp_path, cli):
    from locscope.data.store import write_store

    store = tmp_path / "store"
    write_store(store, [{"id": f"c{i}", "protein_id": f"p{i}", "sequence": "MK",
                         "images": {"protein": np.full((4, 4), i, np.uint16)}} for i in range(3)],
                channels=["protein"], image_shape=(4, 4), progress=False)
    project = unrelated_folder(tmp_path / "project")
    for extra in ([], ["--overwrite"]):
        code, _, err = cli(["dataset", "export-lmdb", store, "--out", project, "--quiet", *extra])
        assert code == 2 and "not empty" in error_line(err)
        assert_untouched(project)
    out = tmp_path / "lmdb"
    assert cli(["dataset", "export-lmdb", store, "--out", out, "--quiet"])[0] == 0
    assert written_by(out) == "dataset export-lmdb" and (out / "data.mdb").is_file()
    code, _, err = cli(["dataset", "export-lmdb", store, "--out", out, "--quiet"])
    assert code == 2 and "--overwrite" in error_line(err)
    assert cli(["dataset", "export-lmdb", store, "--out", out, "--quiet", "--overwrite"])[0] == 0
    assert sorted(json.loads((out / "train_keys.json").read_text()) + json.loads((out / "val_keys.json").read_text())
                  + json.loads((out / "test_keys.json").read_text())) == ["c0", "c1", "c2"]


def test_generate_refuses_to_merge_into_an_earlier_output(tmp_path, cli):
    args = ["generate", "--sequence", "MPKKKRKVEDA", "--landmarks", LANDMARKS, "--steps", "1", "--samples", "1",
            "--device", "cpu", "--out", tmp_path / "out"]
    assert cli(args)[0] == 0
    stale = tmp_path / "out" / "sequence" / "sample_7.png"
    stale.write_bytes(b"old")
    code, _, err = cli(args)
    assert code == 2 and "--overwrite" in error_line(err) and stale.exists()
    assert cli(args + ["--overwrite"])[0] == 0
    assert not stale.exists() and (tmp_path / "out" / "sequence" / "sample_0.png").is_file()
    assert written_by(tmp_path / "out") == "generate"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # the old output was swapped out and removed


def test_simulate_does_not_silently_replace_a_complete_store(tmp_path, cli):
    from locscope.data.store import Store

    base = ["simulate", "--n", "2", "--size", "32", "--masks", "none", "--out", tmp_path / "store"]
    assert cli(base + ["--seed", "1"])[0] == 0
    before = Store.open(tmp_path / "store")[0]["images"]["protein"].copy()
    code, _, err = cli(base + ["--seed", "2"])
    assert code == 2 and "--overwrite" in error_line(err)
    assert np.array_equal(Store.open(tmp_path / "store")[0]["images"]["protein"], before)
    assert cli(base + ["--seed", "2", "--overwrite"])[0] == 0
    assert Store.open(tmp_path / "store").attrs["seed"] == 2


# Minimal arguments of every command that has --out (the --out check comes before any other work).
COMMANDS: dict[str, list[str]] = {
    "generate": ["generate", "--sequence", "MPKKKRKV", "--landmarks", LANDMARKS],
    "demo": ["demo"],
    "design": ["design", "--target", "nucleus", "--length", "20"],
    "localize": ["localize", "--sequence", "MPKKKRKV"],
    "explain": ["explain", "--sequence", "MPKKKRKVEDAAAA"],
    "evaluate": ["evaluate", "--real", "missing_real", "--generated", "missing_generated"],
    "simulate": ["simulate", "--n", "2", "--size", "32"],
    "embed": ["embed", "--csv", "missing.csv"],
    "train celldiff": ["train", "celldiff", "--data", "missing_store"],
    "train celldiff-data": ["train", "celldiff-data", "--synthetic", "2"],
    "train celle2": ["train", "celle2", "--data", "missing_store"],
    "train designer": ["train", "designer"],
    "train fraction-head": ["train", "fraction-head", "--model", "missing_model", "--corpus", "missing_corpus"],
    "stain": ["stain", "--brightfield", "missing.tif"],
    "train stain": ["train", "stain"],
    "train stain-classifier": ["train", "stain-classifier"],
    "train latent": ["train", "latent", "--data", "missing_store", "--autoencoder", "missing_autoencoder"],
    "train latent-autoencoder": ["train", "latent-autoencoder", "--data", "missing_store"],
    "train localizer": ["train", "localizer"],
    "train readout": ["train", "readout", "--data", "missing_store"],
    "train subcell": ["train", "subcell", "--data", "missing_store"],
    "dataset build": ["dataset", "build", "missing_manifest.csv"],
    "dataset export-lmdb": ["dataset", "export-lmdb", "missing_store"],
    "dataset import-lmdb": ["dataset", "import-lmdb", "missing_lmdb"],
}
FILE_OUTPUTS = {"localize"}  # --out is a file there


def commands_with_out() -> set[str]:
    found = set()

    def walk(command, prefix: str) -> None:
        if hasattr(command, "commands"):  # a group
            for name, sub in command.commands.items():
                walk(sub, f"{prefix} {name}".strip())
        elif any("--out" in getattr(p, "opts", ()) for p in command.params):
            found.add(prefix)

    walk(typer.main.get_command(app), "")
    return found


def test_the_walk_covers_every_command_with_out():
    assert commands_with_out() == set(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_refuses_a_bad_out_in_one_line(name, tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("precious\n")
    project = unrelated_folder(tmp_path / "work" / "project")
    if name in FILE_OUTPUTS:
        bad = [tmp_path / "work" / "project", a_file]  # a folder; an existing file without --overwrite
    else:
        bad = [a_file, project, a_file / "below"]
    for out in bad:
        code, _, err = cli([*COMMANDS[name], "--out", out])
        assert code == 2, (name, out, err)
        assert str(out.name) in error_line(err)
    assert a_file.read_text() == "precious\n"
    assert_untouched(project)
    if name not in FILE_OUTPUTS and not name.startswith("train ") or name == "train celldiff-data":
        code, _, err = cli([*COMMANDS[name], "--out", project, "--overwrite"])  # never replaces unrelated data
        assert code == 2 and "not empty" in error_line(err), (name, err)
        assert_untouched(project)


# ------------------------------------------------------------------------------------------------- store build lock
WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import numpy as np
    from locscope.data.store import write_store

    out, ready, go = map(Path, sys.argv[1:4])

    def items():
        for i in range(4):
            if i == 2:  # the lock is held and two items are written: let the other process try
                ready.touch()
                deadline = time.monotonic() + 120
                while not go.exists() and time.monotonic() < deadline:
                    time.sleep(0.02)
            yield {"id": f"c{i}", "protein_id": f"p{i}", "sequence": "MK",
                   "images": {"protein": np.full((4, 4), i, np.uint16)}}

    write_store(out, items(), channels=["protein"], image_shape=(4, 4), n_items=4, progress=False)
""")


def test_two_builds_into_one_store_race_safely(tmp_path, cli):
    from locscope.data.store import Store, lock_path, partial_path

    out, ready, go = tmp_path / "store", tmp_path / "ready", tmp_path / "go"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(out), str(ready), str(go)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and writer.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ready.exists(), writer.stderr.read().decode() if writer.poll() is not None else "writer never started"
        # a second build (the CLI, other settings) into the same store while the first one writes
        code, _, err = cli(["simulate", "--n", "3", "--size", "32", "--masks", "none", "--seed", "6", "--out", out])
        assert code == 2 and "another run is writing it" in error_line(err)
        assert not out.exists() and partial_path(out).exists()  # the first build's work is untouched
    finally:
        go.touch()
        _, stderr = writer.communicate(timeout=300)
    assert writer.returncode == 0, stderr.decode()
    store = Store.open(out)
    assert len(store) == 4 and [int(store[i]["images"]["protein"][0, 0]) for i in range(4)] == [0, 1, 2, 3]
    assert not lock_path(out).exists() and not partial_path(out).exists()
    assert cli(["dataset", "info", out])[0] == 0


def test_output_marker_names_the_command(tmp_path, cli):
    code, _, err = cli(["demo", "--simulator", "--size", "32", "--out", tmp_path / "demo"])
    assert code == 0, err
    assert json.loads((tmp_path / "demo" / MARKER).read_text())["command"] == "demo"
    code, _, err = cli(["explain", "--sequence", "MPKKKRKV", "--out", tmp_path / "demo"])
    assert code == 2 and "not an earlier `locscope explain` output" in error_line(err)


def test_output_folder_swaps_only_a_finished_output(tmp_path, monkeypatch):
    from locscope.utils.outputs import output_folder

    out = tmp_path / "out"
    with output_folder(out, "generate") as work:
        (work / "summary.json").write_text("1")
    with pytest.raises(RuntimeError):  # a run that fails half-way leaves the earlier output whole
        with output_folder(out, "generate", overwrite=True) as work:
            (work / "summary.json").write_text("2")
            raise RuntimeError("killed")
    assert (out / "summary.json").read_text() == "1" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with output_folder(tmp_path / "link", "generate") as work:  # a symlinked folder: written at its target
        (work / "summary.json").write_text("3")
    assert (tmp_path / "link").is_symlink() and (tmp_path / "real" / "summary.json").read_text() == "3"
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    with output_folder(".", "generate") as work:  # `--out .` in an empty folder
        (work / "summary.json").write_text("4")
    assert (tmp_path / "here" / "summary.json").read_text() == "4"
