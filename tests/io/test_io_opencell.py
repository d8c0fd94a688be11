"""OpenCell readers: the real raw MicroManager z-stack and cytoself-style .npy crop sets."""

from __future__ import annotations

import numpy as np
import pytest

from locscope.errors import InputError
from locscope.io import read_image, read_images
from locscope.io.opencell import read_cytoself_crops, read_micromanager_tiff

RAW = "opencell_raw_tiff/A1_1_ATL2__mock.ome.tif"


def test_micromanager_channels_and_projection(shared_data):
    import tifffile

    path = shared_data / RAW
    rec = read_image(path)
    assert rec.format == "micromanager-tiff"
    assert list(rec.channels) == ["nucleus", "protein"]
    assert rec.shape == (103, 103) and rec.dtype == np.uint16
    found = {c["channel"]: c for c in rec.metadata["channels_found"]}
    assert found["nucleus"]["identified_by"] == "405 nm laser" and found["nucleus"]["z_slices"] == 51
    assert found["protein"]["identified_by"] == "488 nm laser" and found["protein"]["exposure_ms"] == 495.0
    # pages 0-50 are Hoechst (405 nm), 51-101 mNeonGreen (488 nm): the projection is their max over z
    pages = tifffile.imread(path, key=range(102))
    np.testing.assert_array_equal(rec.channels["nucleus"], pages[:51].max(axis=0))
    np.testing.assert_array_equal(rec.channels["protein"], pages[51:].max(axis=0))
    assert int(rec.channels["protein"].max()) == 30887 and int(rec.channels["nucleus"].min()) == 555


def test_micromanager_channel_order_override_and_count(shared_data):
    path = shared_data / RAW
    rec = read_micromanager_tiff(path, channel_order=["dapi", "gfp"])
    assert list(rec.channels) == ["nucleus", "protein"]
    with pytest.raises(InputError) as err:
        read_micromanager_tiff(path, channel_order=["nucleus", "protein", "er"])
    assert str(err.value) == (f"{path}: wrong channel count: the file has 2 channel(s) but channel_order names 3 "
                              "(nucleus, protein, er)")


def test_micromanager_truncated(shared_data, tmp_path):
    data = (shared_data / RAW).read_bytes()
    bad = tmp_path / "raw.ome.tif"
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError) as err:
        read_image(bad)
    assert str(err.value) == f"{bad}: truncated or corrupt TIFF file"


def _crop_set(tmp_path, rng, n=5):
    pro = rng.random((n, 100, 100), dtype=np.float32)
    nuc = rng.random((n, 100, 100), dtype=np.float32)
    np.save(tmp_path / "ENSG1_ATL2_pro.npy", pro)
    np.save(tmp_path / "ENSG1_ATL2_nuc.npy", nuc)
    np.save(tmp_path / "ENSG1_ATL2_nucdist.npy", nuc * 2)
    (tmp_path / "ENSG1_ATL2_label.csv").write_text(
        "target_name,fov\n" + "".join(f"ATL2,fov{i}\n" for i in range(n))
    )
    return pro, nuc


def test_cytoself_per_channel_files(tmp_path, rng):
    pro, nuc = _crop_set(tmp_path, rng)
    stack = read_cytoself_crops(tmp_path / "ENSG1_ATL2_nuc.npy")
    assert stack.channels == ("protein", "nucleus") and stack.images.shape == (5, 100, 100, 2)
    np.testing.assert_array_equal(stack.images[..., 0], pro)
    assert stack.labels[3] == {"target_name": "ATL2", "fov": "fov3"}
    assert stack.extra["nucdist"].shape == (5, 100, 100)
    records = read_images([tmp_path / "ENSG1_ATL2_pro.npy"])
    assert len(records) == 5 and records[2].format == "cytoself-npy"
    np.testing.assert_array_equal(records[2].channels["nucleus"], nuc[2])
    assert records[2].metadata["label"]["fov"] == "fov2"
    assert read_image(tmp_path / "ENSG1_ATL2_pro.npy", index=4).metadata["index"] == 4


def test_cytoself_stacked_array(tmp_path, rng):
    crops = rng.integers(0, 65535, (3, 100, 100, 2), dtype=np.uint16)
    np.save(tmp_path / "crops.npy", crops)
    np.save(tmp_path / "crops_label.npy", np.array([["ATL2", "fov0"], ["ATL2", "fov1"], ["SEC61B", "fov2"]]))
    stack = read_cytoself_crops(tmp_path / "crops.npy")
    assert stack.channels == ("protein", "nucleus") and stack.images.dtype == np.uint16
    assert stack.labels[2] == {"col0": "SEC61B", "col1": "fov2"}
    rec = read_image(tmp_path / "crops.npy", index=1)
    np.testing.assert_array_equal(rec.channels["nucleus"], crops[1, :, :, 1])


def test_cytoself_bad_inputs(tmp_path, rng):
    np.save(tmp_path / "three.npy", rng.random((2, 10, 10, 3)).astype(np.float32))
    with pytest.raises(InputError) as err:
        read_cytoself_crops(tmp_path / "three.npy")
    assert str(err.value) == (f"{tmp_path / 'three.npy'}: wrong channel count: 3 channel(s) in shape (2, 10, 10, 3) "
                              "and no channel_order; cytoself crops have 2 (protein, nucleus)")
    np.save(tmp_path / "many.npy", rng.random((2, 10, 10, 2)).astype(np.float32))
    with pytest.raises(InputError) as err:
        read_image(tmp_path / "many.npy")
    assert str(err.value) == (f"{tmp_path / 'many.npy'}: holds 2 crops; pass index= (or use read_images / "
                              "read_cytoself_crops)")
    np.save(tmp_path / "obj_label.npy", np.array([["a", 1]], dtype=object), allow_pickle=True)
    np.save(tmp_path / "obj.npy", rng.random((1, 10, 10, 2)).astype(np.float32))
    with pytest.raises(InputError) as err:
        read_cytoself_crops(tmp_path / "obj.npy")
    assert str(err.value) == (f"{tmp_path / 'obj_label.npy'}: holds Python objects (pickled); refusing to unpickle, "
                              "save labels as CSV")
    data = (tmp_path / "many.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[:300])
    with pytest.raises(InputError) as err:
        read_cytoself_crops(tmp_path / "cut.npy")
    assert str(err.value) == f"{tmp_path / 'cut.npy'}: truncated or corrupt NPY file"
