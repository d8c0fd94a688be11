"""CELL-Diff LMDB layout: export/import round trip, CELL-Diff-compatible PNG bands, a malicious pickle refused."""

from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path

import lmdb
import numpy as np
import pytest
from PIL import Image

from locscope.data.store import Store, write_store
from locscope.errors import InputError
from locscope.io.celldiff_lmdb import CellDiffLMDB, export_store_to_lmdb, import_lmdb_to_store, plain_loads

CHANNELS = ["protein", "nucleus", "microtubules", "er"]
SHAPE = (16, 20)


def make_store(path: Path, dtype: str = "uint8", n: int = 6) -> Store:
    rng = np.random.default_rng(0)
    high = 255 if dtype == "uint8" else 65535
    items = [{
        "id": f"cell{i}", "protein_id": f"ENSG{i % 3}", "sequence": "MPKKKRKV" * (i + 1),
        "images": {c: rng.integers(0, high + 1, SHAPE).astype(dtype) for c in CHANNELS},
        "labels": {"level1": ["nucleoplasm"]}, "provenance": {"cell_line": "U2OS", "rna_expression": 1.5},
    } for i in range(n)]
    return write_store(path, items, channels=CHANNELS, image_shape=SHAPE, image_dtype=dtype, progress=False,
                       split_fractions=(0.34, 0.33, 0.33))


def test_round_trip_8bit_and_celldiff_bands(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s")
    out = export_store_to_lmdb(tmp_path / "s", tmp_path / "lmdb", progress=False)
    assert sorted(p.name for p in out.iterdir()) == [".locscope-output.json", "data.mdb", "lock.mdb", "test_keys.json",
                                                     "train_keys.json", "val_keys.json"]
    # Read a value the way CELL-Diff's HPALMDBDataset does: pickle + PIL bands.
    key = json.loads((out / "train_keys.json").read_text())[0]
    env = lmdb.open(str(out), readonly=True, lock=False)
    with env.begin() as txn:
        value = pickle.loads(txn.get(key.encode()))
    env.close()
    original = store[store.ids.index(key)]
    assert value["protein_seq"] == original["sequence"] and value["ensg_id"] == original["protein_id"]
    assert value["cell_line"] == "U2OS" and value["rna_expression"] == 1.5
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(value["protein_img"])).split()[1]),
                                  original["images"]["protein"])
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(value["nucleus_img"])).split()[2]),
                                  original["images"]["nucleus"])
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(value["microtubules_img"])).split()[0]),
                                  original["images"]["microtubules"])
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(value["ER_img"])).convert("L")),
                                  original["images"]["er"])

    back = import_lmdb_to_store(out, tmp_path / "back", progress=False)
    assert back.image_dtype == "uint8" and back.channels == tuple(CHANNELS)
    assert sorted(back.ids) == sorted(store.ids)
    for split in ("train", "val", "test"):  # the LMDB's splits are kept
        assert sorted(back.ids[i] for i in back.split_indices(split)) == sorted(store.ids[i] for i in store.split_indices(split))
    for i in range(len(back)):
        got = back[i]
        want = store[store.ids.index(got["id"])]
        for c in CHANNELS:
            np.testing.assert_array_equal(got["images"][c], want["images"][c])
        assert got["sequence"] == want["sequence"] and got["protein_id"] == want["protein_id"]
        assert got["labels"] == want["labels"] and got["provenance"]["cell_line"] == "U2OS"


def test_round_trip_16bit_lossless(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s", dtype="uint16", n=3)
    export_store_to_lmdb(tmp_path / "s", tmp_path / "lmdb", progress=False)  # uint16 store -> 16-bit PNGs
    db = CellDiffLMDB(tmp_path / "lmdb")
    assert len(db) == 3
    back = import_lmdb_to_store(tmp_path / "lmdb", tmp_path / "back", keep_splits=False, seed=1, progress=False)
    assert back.image_dtype == "uint16"
    for i in range(3):
        want = store[store.ids.index(back[i]["id"])]
        np.testing.assert_array_equal(back[i]["images"]["er"], want["images"]["er"])
        assert back[i]["images"]["er"].dtype == np.uint16


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def _write_lmdb(path: Path, values: dict[str, bytes]) -> None:
    path.mkdir()
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for key, data in values.items():
            txn.put(key.encode(), data)
    env.close()
    (path / "train_keys.json").write_text(json.dumps(list(values)))


def test_malicious_pickle_is_refused(tmp_path: Path) -> None:
    evil = pickle.dumps({"protein_img": b"", "payload": _Exploit()})
    _write_lmdb(tmp_path / "evil", {"cell_7": evil, "cell_8": pickle.dumps([1, 2])[:-3]})
    db = CellDiffLMDB(tmp_path / "evil")
    with pytest.raises(InputError) as err:
        db[0]
    message = str(err.value)
    assert message == (f"{tmp_path / 'evil'}: key 'cell_7': refusing to unpickle posix.system; only plain values "
                       f"(dict, list, tuple, str, bytes, int, float, bool, None) are allowed")
    assert "\n" not in message
    with pytest.raises(InputError, match=r"key 'cell_8': not a readable pickle \(UnpicklingError"):
        db[1]
    # Plain values of every admitted type load.
    plain = {"a": [1, 2.5, "x", b"y", None, True, (3, 4)]}
    assert plain_loads(pickle.dumps(plain, protocol=5), "test") == plain


def test_bad_layouts(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nowhere: CELL-Diff LMDB directory not found"):
        CellDiffLMDB(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"empty: no data\.mdb; not an LMDB directory"):
        CellDiffLMDB(tmp_path / "empty")
    _write_lmdb(tmp_path / "db", {"k": pickle.dumps({"protein_seq": "MK"})})
    with pytest.raises(InputError, match=r"test_keys\.json: split 'test' not found; splits here: train"):
        CellDiffLMDB(tmp_path / "db", split="test")
    with pytest.raises(InputError, match=r"key 'k': no image field \(protein_img, nucleus_img"):
        CellDiffLMDB(tmp_path / "db")[0]
    (tmp_path / "db" / "train_keys.json").write_text(json.dumps(["k", "gone"]))
    with pytest.raises(InputError, match=r"key 'gone': listed in a keys file but missing from the LMDB"):
        CellDiffLMDB(tmp_path / "db")[1]
