"""The dataset store: round trip, splits by protein, lazy arrays, bad input, a killed build that is resumed."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from locscope.data.splits import split_by_protein
from locscope.data.store import Store, partial_path, write_store
from locscope.errors import InputError

SHAPE = (12, 16)


def make_items(n: int, seed: int = 0, n_proteins: int = 5) -> list[dict]:
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        items.append({
            "id": f"cell{i}",
            "protein_id": f"P{i % n_proteins}",
            "sequence": "MKV" * (i + 1),
            "images": {
                "protein": rng.integers(0, 65535, SHAPE).astype(np.uint16),
                "nucleus": rng.integers(0, 255, SHAPE).astype(np.uint8),
            },
            "masks": {"nucleoplasm": rng.random(SHAPE) > 0.5, "cytosol": np.zeros(SHAPE, bool)},
            "labels": {"level1": ["nucleoplasm"], "level3": ["nucleus"]},
            "provenance": {"source": "test", "index": i},
        })
    return items


def test_round_trip(tmp_path: Path) -> None:
    items = make_items(10)
    store = write_store(tmp_path / "s", iter(items), channels=["protein", "nucleus"], image_shape=SHAPE,
                        mask_names=["nucleoplasm", "cytosol"], attrs={"pixel_size_nm": 80.0, "generator": {"a": 1}},
                        progress=False)
    assert len(store) == 10
    assert store.ids == [f"cell{i}" for i in range(10)]
    assert store.channels == ("protein", "nucleus") and store.mask_names == ("nucleoplasm", "cytosol")
    assert store.image_shape == SHAPE and store.attrs == {"pixel_size_nm": 80.0, "generator": {"a": 1}}
    reopened = Store.open(tmp_path / "s")
    for i in (0, 7, -1):
        got, want = reopened[i], items[i]
        assert got["id"] == want["id"] and got["protein_id"] == want["protein_id"]
        assert got["sequence"] == want["sequence"]
        assert got["images"]["protein"].dtype == np.uint16
        np.testing.assert_array_equal(got["images"]["protein"], want["images"]["protein"])
        np.testing.assert_array_equal(got["images"]["nucleus"], want["images"]["nucleus"])
        np.testing.assert_array_equal(got["masks"]["nucleoplasm"], want["masks"]["nucleoplasm"])
        assert got["masks"]["cytosol"].dtype == bool and not got["masks"]["cytosol"].any()
        assert got["labels"] == want["labels"] and got["provenance"] == want["provenance"]
        assert got["split"] in ("train", "val", "test")
    lazy = reopened.image_array("protein")
    assert lazy.shape == (10, *SHAPE)
    np.testing.assert_array_equal(lazy[3:5], np.stack([items[3]["images"]["protein"], items[4]["images"]["protein"]]))
    assert reopened.mask_array("nucleoplasm").dtype == bool
    clone = pickle.loads(pickle.dumps(reopened))  # DataLoader workers receive a pickled store
    np.testing.assert_array_equal(clone[2]["images"]["protein"], items[2]["images"]["protein"])
    with pytest.raises(IndexError):
        reopened[10]


def test_float_store_and_overwrite(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    item = {"id": "a", "protein_id": "A", "images": {"nucleus": rng.random(SHAPE, dtype=np.float32)}}
    store = write_store(tmp_path / "f", [item], channels=["nucleus"], image_shape=SHAPE, image_dtype="float32",
                        progress=False)
    assert store[0]["images"]["nucleus"].dtype == np.float32
    assert store[0]["sequence"] == "" and store[0]["masks"] == {} and store[0]["labels"] == {}
    # Rebuilding over a complete store needs overwrite=True, and then replaces it.
    item2 = {"id": "b", "protein_id": "B", "images": {"nucleus": np.ones(SHAPE, np.float32)}}
    with pytest.raises(InputError, match="holds a complete store; pass --overwrite"):
        write_store(tmp_path / "f", [item2, item], channels=["nucleus"], image_shape=SHAPE, image_dtype="float32",
                    progress=False)
    assert Store.open(tmp_path / "f").ids == ["a"]
    store = write_store(tmp_path / "f", [item2, item], channels=["nucleus"], image_shape=SHAPE, image_dtype="float32",
                        progress=False, overwrite=True)
    assert store.ids == ["b", "a"]


def test_splits_by_protein(tmp_path: Path) -> None:
    items = make_items(40, n_proteins=10)
    store = write_store(tmp_path / "s", items, channels=["protein", "nucleus"], image_shape=SHAPE,
                        mask_names=["nucleoplasm", "cytosol"], seed=3, progress=False)
    parts = {name: store.split_indices(name) for name in ("train", "val", "test")}
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(40))
    assert [len(p) for p in parts.values()] == [32, 4, 4]  # 10 proteins x 4 items, dealt 8/1/1
    proteins = {name: {store.protein_ids[i] for i in idx} for name, idx in parts.items()}
    assert not proteins["train"] & proteins["val"] and not proteins["train"] & proteins["test"]
    assert not proteins["val"] & proteins["test"]
    assert all(store[int(i)]["split"] == "val" for i in parts["val"])
    again = split_by_protein([it["protein_id"] for it in items], seed=3)
    assert [again[i] for i in parts["test"]] == ["test"] * 4
    assert (split_by_protein([f"P{i % 10}" for i in range(40)], seed=4) != again).any()


def test_split_groups_join_proteins() -> None:
    proteins = ["A", "B", "C", "D", "E", "F"]
    groups = ["g1", "g1", None, "g2", "g2", "g3"]
    for seed in range(5):
        split = split_by_protein(proteins, (0.5, 0.25, 0.25), seed=seed, groups=groups)
        assert split[0] == split[1] and split[3] == split[4]
    with pytest.raises(InputError, match=r"split fractions \(0\.5, 0\.5, 0\.5\): need three non-negative"):
        split_by_protein(proteins, (0.5, 0.5, 0.5))


def test_bad_inputs(tmp_path: Path) -> None:
    items = make_items(2)
    kwargs = dict(image_shape=SHAPE, mask_names=["nucleoplasm", "cytosol"], progress=False)
    with pytest.raises(InputError, match=r"unknown channel 'gfp2'; accepted channels: protein, nucleus"):
        write_store(tmp_path / "a", items, channels=["protein", "gfp2"], **kwargs)
    with pytest.raises(InputError, match=r"^item 0 \('cell0'\): unknown channel 'nucleus'; store channels: protein$"):
        write_store(tmp_path / "b", items, channels=["protein"], **kwargs)
    with pytest.raises(InputError, match=r"^item 0 \('cell0'\): missing channel 'er'$"):
        write_store(tmp_path / "c", [dict(items[0], images={"protein": items[0]["images"]["protein"]})],
                    channels=["protein", "er"], **kwargs)
    with pytest.raises(InputError, match=r"^item 0 \('cell0'\) channel 'protein': shape \(12, 16\), the store holds \(8, 8\)"):
        write_store(tmp_path / "d", items, channels=["protein", "nucleus"], image_shape=(8, 8), progress=False)
    floaty = dict(items[0], images={"protein": np.zeros(SHAPE, np.float32), "nucleus": items[0]["images"]["nucleus"]})
    with pytest.raises(InputError, match=r"float32 image cannot be stored as uint16 without rescaling"):
        write_store(tmp_path / "e", [floaty], channels=["protein", "nucleus"], **kwargs)
    assert not (tmp_path / "e").exists()
    with pytest.raises(InputError, match=r"^item 0 \('cell0'\): missing mask 'golgi'$"):
        write_store(tmp_path / "g", items, channels=["protein", "nucleus"], image_shape=SHAPE, mask_names=["golgi"],
                    progress=False)
    (tmp_path / "h").mkdir()
    (tmp_path / "h" / "thesis.txt").write_text("keep me")
    with pytest.raises(InputError, match=r"h: folder is not empty and is not a locscope store; nothing was written"):
        write_store(tmp_path / "h", items, channels=["protein", "nucleus"], **kwargs)
    with pytest.raises(InputError, match=r"nowhere: store not found"):
        Store.open(tmp_path / "nowhere")
    with pytest.raises(InputError, match=r"h: not a complete locscope store \(no COMPLETE marker\)"):
        Store.open(tmp_path / "h")
    # The failed build of "e" left its partial directory: the store reads as incomplete, not as missing.
    with pytest.raises(InputError, match=r"e: incomplete store \(an interrupted build left \.e\.partial\); re-run"):
        Store.open(tmp_path / "e")


KILLED_BUILD = textwrap.dedent("""
    import sys, time
    import numpy as np
    from locscope.data.store import write_store

    class SlowItems:
        # A sequence: a resumed build indexes it from the first unfinished item and never touches earlier ones.
        # Item `stop_at` never finishes (the build waits there to be killed, however fast or slow the machine).
        def __init__(self, n, stop_at, log):
            self.n, self.stop_at, self.log = n, stop_at, log
        def __len__(self):
            return self.n
        def __getitem__(self, i):
            with open(self.log, "a") as f:
                f.write(f"{i}\\n")
            if i == self.stop_at:
                time.sleep(3600)
            rng = np.random.default_rng(i)
            return {"id": f"c{i}", "protein_id": f"P{i % 4}", "sequence": "MK" * (i + 1),
                    "images": {"protein": rng.integers(0, 65535, (16, 16)).astype(np.uint16)},
                    "masks": {"nucleus": rng.random((16, 16)) > 0.5}}

    out, n, stop_at, log = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    write_store(out, SlowItems(n, stop_at, log), channels=["protein"], image_shape=(16, 16), image_dtype="uint16",
                mask_names=["nucleus"], progress=False)
""")


def test_killed_build_is_incomplete_and_resumes(tmp_path: Path) -> None:
    script = tmp_path / "build.py"
    script.write_text(KILLED_BUILD)
    out, log = tmp_path / "store", tmp_path / "requested.txt"
    proc = subprocess.Popen([sys.executable, str(script), str(out), "30", "10", str(log)])
    jsonl = partial_path(out) / "items.jsonl"
    deadline = time.time() + 600  # a bound for a stuck build only: the build itself waits at item 10
    while time.time() < deadline and proc.poll() is None:  # kill once some items are finished
        if jsonl.exists() and jsonl.read_bytes().count(b"\n") >= 5:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = jsonl.read_bytes().count(b"\n")
    assert 5 <= finished <= 10
    assert not out.exists()
    with pytest.raises(InputError, match=r"store: incomplete store \(an interrupted build left \.store\.partial\)"):
        Store.open(out)
    with pytest.raises(InputError, match=r"incomplete store \(an unfinished build\)"):
        Store.open(partial_path(out))

    log.write_text("")
    subprocess.run([sys.executable, str(script), str(out), "30", "-1", str(log)], check=True)
    requested = [int(x) for x in log.read_text().split()]
    assert requested == list(range(finished, 30))  # resumed after the last finished item
    store = Store.open(out)
    assert not partial_path(out).exists()
    assert store.ids == [f"c{i}" for i in range(30)]
    for i in (0, finished - 1, finished, 29):
        rng = np.random.default_rng(i)
        np.testing.assert_array_equal(store[i]["images"]["protein"], rng.integers(0, 65535, (16, 16)).astype(np.uint16))
        np.testing.assert_array_equal(store[i]["masks"]["nucleus"], rng.random((16, 16)) > 0.5)


def test_changed_build_restarts(tmp_path: Path) -> None:
    out = tmp_path / "s"
    items = make_items(4)
    with pytest.raises(InputError):  # dies on the last item, leaving a partial build of 3 items
        write_store(out, items[:3] + [dict(items[3], images={})], channels=["protein", "nucleus"], image_shape=SHAPE,
                    mask_names=["nucleoplasm", "cytosol"], progress=False)
    assert (partial_path(out) / "items.jsonl").read_text().count("\n") == 3
    # Different parameters (no masks): the leftovers are discarded and the build starts over.
    store = write_store(out, items, channels=["protein", "nucleus"], image_shape=SHAPE, progress=False)
    assert len(store) == 4 and store.mask_names == ()


def test_direct_chunk_reads_match_zarr(tmp_path: Path, monkeypatch) -> None:
    items = make_items(70)  # > 64 items: the metadata spans two chunks
    write_store(tmp_path / "s", items, channels=["protein", "nucleus"], image_shape=SHAPE,
                mask_names=["nucleoplasm", "cytosol"], progress=False)
    direct = Store.open(tmp_path / "s")
    assert direct._direct is not None  # the fast path is in use for the layout write_store produces
    monkeypatch.setenv("LOCSCOPE_STORE_DIRECT", "0")
    via_zarr = Store.open(tmp_path / "s")
    assert via_zarr._direct is None
    for i in (0, 63, 64, 69):
        a, b = direct[i], via_zarr[i]
        assert a["id"] == b["id"] == f"cell{i}" and a["sequence"] == b["sequence"] and a["split"] == b["split"]
        for name in ("protein", "nucleus"):
            assert a["images"][name].dtype == b["images"][name].dtype == np.uint16
            np.testing.assert_array_equal(a["images"][name], b["images"][name])
        for name in ("nucleoplasm", "cytosol"):  # the all-False cytosol chunks were never written
            assert a["masks"][name].dtype == bool
            np.testing.assert_array_equal(a["masks"][name], b["masks"][name])
        a["images"]["protein"][0, 0] = 1  # results are writable copies, not views of a cache


def test_given_splits_are_kept_and_the_rest_drawn(tmp_path: Path) -> None:
    items = make_items(12, n_proteins=6)
    items[0]["split"] = "test"  # protein P0: items 0 and 6; item 6 has no split and follows its protein
    items[1]["split"] = "val"
    store = write_store(tmp_path / "s", items, channels=["protein", "nucleus"], image_shape=SHAPE,
                        mask_names=["nucleoplasm", "cytosol"], progress=False)
    assert [store[i]["split"] for i in (0, 6, 1, 7)] == ["test", "test", "val", "val"]
    assert {store[i]["split"] for i in range(12)} <= {"train", "val", "test"}
    bad = make_items(2, n_proteins=1)
    bad[0]["split"], bad[1]["split"] = "train", "test"
    with pytest.raises(InputError, match=r"^item 'cell1': protein 'P0' is in both the 'train' and 'test' splits"):
        write_store(tmp_path / "b", bad, channels=["protein", "nucleus"], image_shape=SHAPE,
                    mask_names=["nucleoplasm", "cytosol"], progress=False)


def test_duplicate_ids_are_refused(tmp_path: Path) -> None:
    items = make_items(3)
    items[2]["id"] = "cell0"
    with pytest.raises(InputError, match=r"^item 2 \('cell0'\): duplicate id \(item 0 has it too\)$"):
        write_store(tmp_path / "s", items, channels=["protein", "nucleus"], image_shape=SHAPE,
                    mask_names=["nucleoplasm", "cytosol"], progress=False)


def test_mask_views_and_format_check(tmp_path: Path) -> None:
    items = make_items(5)
    store = write_store(tmp_path / "s", items, channels=["protein", "nucleus"], image_shape=SHAPE,
                        mask_names=["nucleoplasm", "cytosol"], progress=False)
    view = store.mask_array("nucleoplasm")
    assert view.shape == (5, *SHAPE) and len(view) == 5 and view.dtype == bool
    np.testing.assert_array_equal(view[3], items[3]["masks"]["nucleoplasm"])
    np.testing.assert_array_equal(view[1:3, 2:5], np.stack([it["masks"]["nucleoplasm"][2:5] for it in items[1:3]]))
    np.testing.assert_array_equal(np.asarray(view), np.stack([it["masks"]["nucleoplasm"] for it in items]))
    assert not np.asarray(store.mask_array("cytosol")).any()
    with pytest.raises(InputError, match=r"unknown mask 'golgi'; store masks: nucleoplasm, cytosol"):
        store.mask_array("golgi")
    with pytest.raises(InputError, match=r"unknown channel 'er'; store channels: protein, nucleus"):
        store.image_array("er")
    import zarr

    group = zarr.open_group(str(tmp_path / "s"), mode="r+")
    group.attrs["locscope_store"] = {**group.attrs["locscope_store"], "format_version": 1}
    with pytest.raises(InputError, match=r"version 1 is not supported \(this locscope reads version 2\); rebuild"):
        Store.open(tmp_path / "s")
