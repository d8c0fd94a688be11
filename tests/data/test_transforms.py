"""Transforms on known arrays, with exact expected values, for NumPy and torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from locscope.data import transforms as T
from locscope.errors import InputError


def grid(rows: int = 4, cols: int = 4) -> np.ndarray:
    return np.arange(rows * cols, dtype=np.float32).reshape(rows, cols)


def test_random_crop_same_window_for_all_arrays() -> None:
    image = grid(6, 6)
    cell = {"protein": image, "nucleus": image + 100, "mask": image > 10}
    out = T.random_crop(cell, (3, 2), rng=np.random.default_rng(5))
    top, left = divmod(int(out["protein"][0, 0]), 6)
    np.testing.assert_array_equal(out["protein"], image[top: top + 3, left: left + 2])
    np.testing.assert_array_equal(out["nucleus"], image[top: top + 3, left: left + 2] + 100)
    np.testing.assert_array_equal(out["mask"], (image > 10)[top: top + 3, left: left + 2])
    again = T.random_crop(cell, (3, 2), rng=np.random.default_rng(5))
    np.testing.assert_array_equal(again["protein"], out["protein"])
    stacked = T.random_crop([np.stack([image, image]), image], 4, rng=1)  # (C, H, W) and (H, W) together
    assert isinstance(stacked, list) and stacked[0].shape == (2, 4, 4)
    np.testing.assert_array_equal(stacked[0][1], stacked[1])
    with pytest.raises(InputError, match=r"^crop size 7x7 is larger than the image 6x6$"):
        T.random_crop(image, 7)
    with pytest.raises(InputError, match=r"array 'b': spatial shape \(5, 6\) differs from 'a' \(6, 6\)"):
        T.random_crop({"a": image, "b": image[:5]}, 2)
    np.testing.assert_array_equal(T.center_crop(image, 2), [[14, 15], [20, 21]])


def test_rotations_and_flips_exact() -> None:
    x = np.array([[1, 2], [3, 4]])
    np.testing.assert_array_equal(T.rot90(x, 1), [[2, 4], [1, 3]])  # counter-clockwise
    np.testing.assert_array_equal(T.flip(x, "cols"), [[2, 1], [4, 3]])
    np.testing.assert_array_equal(T.flip(x, "rows"), [[3, 4], [1, 2]])
    images = [T.dihedral(x, i) for i in range(8)]
    assert len({im.tobytes() for im in images}) == 8  # all 8 symmetries are distinct
    np.testing.assert_array_equal(T.dihedral(x, 5), [[4, 2], [3, 1]])  # rot90 then flip columns
    # Same random symmetry on image and mask; torch gives the same answer as NumPy.
    cell = {"image": np.stack([x, x * 10]), "mask": x > 2}
    out = T.random_dihedral(cell, rng=3)
    np.testing.assert_array_equal(out["image"][0] > 2, out["mask"])
    np.testing.assert_array_equal(out["image"][1], out["image"][0] * 10)
    assert out["image"].flags["C_CONTIGUOUS"]
    t = T.random_dihedral({"image": torch.as_tensor(cell["image"]), "mask": torch.as_tensor(cell["mask"])}, rng=3)
    np.testing.assert_array_equal(t["image"].numpy(), out["image"])


def test_resize_exact() -> None:
    x = np.array([[0.0, 1.0], [2.0, 3.0]], dtype=np.float32)
    up = T.resize(x, 4, order=0)
    np.testing.assert_array_equal(up, np.repeat(np.repeat(x, 2, 0), 2, 1))
    down = T.resize(np.repeat(np.repeat(x, 2, 0), 2, 1), 2, order=1)
    np.testing.assert_allclose(down, x, atol=0.35)  # anti-aliased, range kept
    mask = np.array([[True, False], [False, True]])
    up_mask = T.resize(mask, (4, 4))
    assert up_mask.dtype == bool and up_mask.sum() == 8
    t = T.resize(torch.as_tensor(x)[None], 4, order=0)
    assert t.shape == (1, 4, 4)
    np.testing.assert_array_equal(t[0].numpy(), up)
    lin = T.resize(torch.ones(2, 3, 8, 8), (4, 6))
    assert lin.shape == (2, 3, 4, 6) and torch.allclose(lin, torch.ones(()))
    with pytest.raises(InputError, match=r"resize order 2: accepted values are 0"):
        T.resize(x, 4, order=2)


def test_normalisations_exact() -> None:
    x = np.array([[[0, 5], [10, 20]], [[2, 2], [2, 2]]], dtype=np.uint16)  # (C=2, 2, 2); channel 1 constant
    np.testing.assert_array_equal(T.minmax_per_channel(x), [[[0, 0.25], [0.5, 1]], [[0, 0], [0, 0]]])
    np.testing.assert_array_equal(T.minmax_joint(x), np.float32([[[0, 0.25], [0.5, 1]], [[0.1, 0.1], [0.1, 0.1]]]))
    batch = torch.as_tensor(np.stack([x, x * 2]).astype(np.float32))  # (B, C, H, W): joint per cell
    joint = T.minmax_joint(batch)
    assert joint.dtype == torch.float32
    np.testing.assert_allclose(joint[1].numpy(), T.minmax_joint(x))
    np.testing.assert_allclose(T.minmax_per_channel(batch)[0].numpy(), T.minmax_per_channel(x))

    ramp = np.arange(101, dtype=np.float32).reshape(1, 101)
    np.testing.assert_allclose(T.percentile_normalize(ramp, 10, 90)[0, [0, 10, 50, 90, 100]], [0, 0, 0.5, 1, 1])
    np.testing.assert_allclose(T.percentile_normalize(ramp, 10, 90, clip=False)[0, 0], -0.125)
    np.testing.assert_allclose(T.percentile_normalize(torch.as_tensor(ramp), 10, 90).numpy(),
                               T.percentile_normalize(ramp, 10, 90), atol=1e-6)

    z = T.standardize(np.array([[1.0, 3.0]]))
    np.testing.assert_array_equal(z, [[-1.0, 1.0]])
    z2 = T.standardize(np.array([[[0.0, 30.0]], [[1.0, 1.0]]]), mean=[10.0, 1.0], std=[2.0, 1.0], clip=5.0)
    np.testing.assert_array_equal(z2, [[[-5.0, 5.0]], [[0.0, 0.0]]])
    np.testing.assert_allclose(T.standardize(torch.tensor([[1.0, 3.0]])).numpy(), [[-1.0, 1.0]])

    np.testing.assert_array_equal(T.to_minus_one_one(np.array([0, 255], np.uint8)), [-1, 1])
    np.testing.assert_allclose(T.to_minus_one_one(np.array([0, 32768, 65535], np.uint16)), [-1, 0.0000153, 1], atol=1e-6)
    np.testing.assert_array_equal(T.to_minus_one_one(np.array([0.0, 0.25, 1.0])), [-1, -0.5, 1])
    np.testing.assert_array_equal(T.to_minus_one_one(np.array([2.0, 4.0]), low=2, high=4), [-1, 1])
    np.testing.assert_array_equal(T.from_minus_one_one(np.array([-1.0, 0.0, 2.0])), [0, 0.5, 1])
    assert T.to_minus_one_one(torch.tensor([0, 255], dtype=torch.uint8)).tolist() == [-1.0, 1.0]


def test_median_threshold_uses_lower_median() -> None:
    x = np.array([[4.0, 1.0], [3.0, 2.0]])  # middle values 2 and 3: torch.median takes 2
    np.testing.assert_array_equal(T.lower_median(x), 2.0)
    np.testing.assert_array_equal(T.median_threshold(x), [[True, False], [True, False]])
    t = torch.as_tensor(x)
    assert T.lower_median(t).item() == torch.median(t).item() == 2.0
    np.testing.assert_array_equal(T.median_threshold(t).numpy(), T.median_threshold(x))
    batch = np.stack([x, x + 10])  # per image
    np.testing.assert_array_equal(T.lower_median(batch), [2.0, 12.0])


def two_touching_disks(shape=(40, 60), radius=9) -> np.ndarray:
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    a = (rows - 20) ** 2 + (cols - 20) ** 2 <= radius**2
    b = (rows - 20) ** 2 + (cols - 36) ** 2 <= radius**2  # centres 16 px apart, radii 9: they overlap
    return a | b


def test_segment_nuclei_splits_touching_nuclei() -> None:
    rng = np.random.default_rng(0)
    mask = two_touching_disks()
    assert len(np.unique(__import__("scipy.ndimage", fromlist=["label"]).label(mask)[0])) == 2  # one blob
    image = (mask * 2000 + rng.normal(300, 40, mask.shape)).clip(0, 65535).astype(np.uint16)
    speck = image.copy()
    speck[2:4, 55:57] = 4000  # 4-pixel debris, dropped by min_area
    labels = T.segment_nuclei(speck, sigma=1.0, min_area=30, min_distance=5)
    assert labels.dtype == np.int32 and labels.max() == 2
    assert labels[20, 16] != labels[20, 40] and labels[20, 16] > 0 and labels[20, 40] > 0
    assert labels[3, 56] == 0 and labels[0, 0] == 0
    assert abs(int((labels > 0).sum()) - int(mask.sum())) < 0.1 * mask.sum()
    assert T.segment_nuclei(np.full((10, 10), 7, np.uint8)).max() == 0


def test_nuclear_distance_map_exact() -> None:
    mask = np.zeros((1, 5), bool)
    mask[0, :2] = True
    np.testing.assert_array_equal(T.nuclear_distance_map(mask, normalize="none"), [[1.5, 0.5, -0.5, -1.5, -2.5]])
    np.testing.assert_allclose(T.nuclear_distance_map(mask), [[1.0, 1 / 3, -0.2, -0.6, -1.0]])
    # Two nuclei of different sizes: per-nucleus normalisation puts both centres at 1, global only the larger one.
    labels = np.zeros((7, 12), np.int32)
    labels[1:6, 1:6] = 1  # 5x5: centre 2.5 px from the border
    labels[2:5, 8:11] = 2  # 3x3: centre 1.5 px from the border
    per = T.nuclear_distance_map(labels)
    glob = T.nuclear_distance_map(labels, normalize="global")
    assert per[3, 3] == 1.0 and per[3, 9] == 1.0
    assert glob[3, 3] == 1.0 and glob[3, 9] == pytest.approx(1.5 / 2.5)
    assert per[0, 0] < 0 and per.min() == -1.0 and ((per > 0) == (labels > 0)).all()
    # Touching nuclei keep a border between them: the shared edge pixels are 0.5 px from it.
    touching = np.zeros((3, 6), np.int32)
    touching[:, :3], touching[:, 3:] = 1, 2
    raw = T.nuclear_distance_map(touching, normalize="none")
    np.testing.assert_array_equal(raw[1], [2.5, 1.5, 0.5, 0.5, 1.5, 2.5])
    assert (T.nuclear_distance_map(np.zeros((3, 3), bool)) == -1).all()
    with pytest.raises(InputError, match=r"normalize 'max': accepted values are 'per-nucleus', 'global', 'none'"):
        T.nuclear_distance_map(mask, normalize="max")  # type: ignore[arg-type]


@pytest.mark.parametrize("sample, low, high", [("hpa/1", 6, 8), ("opencell/1", 10, 14)])
def test_segment_real_nuclei(shared_data, sample: str, low: int, high: int) -> None:
    from locscope.io import read_image

    nucleus = read_image(shared_data / "celldiff_samples" / sample / "nucleus.png").channels["nucleus"]
    labels = T.segment_nuclei(nucleus, sigma=2, min_area=100, min_distance=10)
    assert low <= labels.max() <= high  # 6 whole or cut HPA nuclei; ~11 crowded OpenCell nuclei, touching ones split
    assert nucleus[labels > 0].mean() > 5 * nucleus[labels == 0].mean()
    distance = T.nuclear_distance_map(labels)
    assert distance.min() == -1.0 and distance.max() == 1.0 and ((distance > 0) == (labels > 0)).all()


def test_to_unit_range_clips_for_models_and_refuses_undeclared_ranges_for_scores():
    assert T.to_unit_range(np.array([0, 128, 255], np.uint8)).tolist() == [0.0, np.float32(128) / 255, 1.0]
    assert T.to_unit_range(np.array([True, False])).tolist() == [1.0, 0.0]
    assert T.to_unit_range(np.array([-1.0, 0.0, 1.0], np.float32)).tolist() == [0.0, 0.5, 1.0]
    assert T.to_unit_range(np.array([0.25, 1.5])).tolist() == [0.25, 1.0]            # clipped for a model input
    assert T.to_unit_range(np.array([0.25, 0.5]), dtype=np.float64).dtype == np.float64
    scored = T.to_unit_range(np.array([-1.0, 1.0]), out_of_range="raise", dtype=np.float64)
    assert scored.tolist() == [0.0, 1.0]
    with pytest.raises(InputError, match=r"^x.tif: float image with values in \[0, 3\]"):
        T.to_unit_range(np.array([0.0, 3.0]), out_of_range="raise", where="x.tif")
    with pytest.raises(InputError, match="NaN or infinite"):
        T.to_unit_range(np.array([0.0, np.nan]), out_of_range="raise")


def test_resize_to_model_averages_down_and_interpolates_up():
    image = np.arange(16, dtype=np.float32).reshape(4, 4)
    assert T.resize_to_model(image, 2).tolist() == [[2.5, 4.5], [10.5, 12.5]]     # means of 2 x 2 blocks
    up = T.resize_to_model(np.array([[0.0, 1.0], [0.0, 1.0]]), 4)
    assert up.dtype == np.float32 and up[0].tolist() == [0.0, 0.25, 0.75, 1.0]
    assert T.resize_to_model(image, 4).tolist() == image.tolist()
