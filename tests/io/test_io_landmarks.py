"""Float landmark stacks (ProtiCelli): channel orders, non-square sizes, value range, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest

from locscope.errors import InputError
from locscope.io import read_image
from locscope.io.landmarks import read_landmark_stack


def test_proticelli_reference_cells(shared_data):
    import tifffile

    for name in ("cell_0.tiff", "cell_1.tiff"):
        path = shared_data / "proticelli_landmarks" / "example_cell_reference_input" / name
        rec = read_image(path)
        assert rec.format == "landmark-stack"
        assert list(rec.channels) == ["microtubules", "nucleus", "er"]
        assert rec.shape == (512, 512) and rec.dtype == np.float32
        raw = tifffile.imread(path)
        np.testing.assert_array_equal(rec.channels["er"], raw[..., 2])
        assert float(rec.channels["nucleus"].min()) == -1.0 and float(rec.channels["nucleus"].max()) == 1.0


def test_rela_cell_with_protein_non_square(shared_data):
    path = shared_data / "proticelli_landmarks" / "RELA_A-431" / "cell_9.tiff"
    rec = read_landmark_stack(path)
    assert list(rec.channels) == ["microtubules", "protein", "nucleus", "er"]
    assert rec.shape == (456, 512)
    assert float(rec.channels["protein"].max()) == pytest.approx(-0.0334928, abs=1e-6)
    assert rec.metadata["value_range"] == [-1.0, pytest.approx(1.4019139, abs=1e-6)]
    assert rec.metadata["in_minus1_1"] is False  # the ER plane overshoots 1 after upstream resizing


def test_declared_order_and_chw(tmp_path, rng):
    import tifffile

    stack = (rng.random((3, 40, 24), dtype=np.float32) * 2 - 1)
    tifffile.imwrite(tmp_path / "chw.tif", stack)
    rec = read_landmark_stack(tmp_path / "chw.tif", channel_order=["nucleus", "er", "microtubules"])
    assert rec.shape == (40, 24)
    np.testing.assert_array_equal(rec.channels["er"], stack[1])


def test_wrong_channel_count(shared_data):
    path = shared_data / "proticelli_landmarks" / "RELA_A-431" / "cell_9.tiff"
    with pytest.raises(InputError) as err:
        read_landmark_stack(path, channel_order=["microtubules", "nucleus", "er"])
    assert str(err.value) == (f"{path}: wrong channel count: the file has 4 channel(s) but channel_order names 3 "
                              "(microtubules, nucleus, er)")


def test_five_channels_without_order_and_nan(tmp_path, rng):
    import tifffile

    tifffile.imwrite(tmp_path / "five.tif", rng.random((16, 16, 5), dtype=np.float32))
    with pytest.raises(InputError) as err:
        read_landmark_stack(tmp_path / "five.tif")
    assert str(err.value) == (f"{tmp_path / 'five.tif'}: wrong channel count: 5 channels and no channel_order; "
                              "ProtiCelli stacks have 3 (microtubules, nucleus, er) or 4 (microtubules, protein, "
                              "nucleus, er)")
    bad = rng.random((16, 16, 3), dtype=np.float32)
    bad[3, 5, 1] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", bad)
    with pytest.raises(InputError) as err:
        read_image(tmp_path / "nan.tif")
    assert str(err.value) == f"{tmp_path / 'nan.tif'}: non-finite value at row 3 col 5 channel 'nucleus'"


def test_truncated_landmark_file(shared_data, tmp_path):
    data = (shared_data / "proticelli_landmarks" / "example_cell_reference_input" / "cell_0.tiff").read_bytes()
    bad = tmp_path / "cell.tiff"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as err:
        read_landmark_stack(bad)
    assert str(err.value) == f"{bad}: truncated or corrupt TIFF file"
