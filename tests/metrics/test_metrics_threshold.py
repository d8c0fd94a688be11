"""IoU with CELL-Diff's median conventions: hand-computed cases and the golden values on real images."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter

from locscope.metrics.threshold import iou, mask_iou, median_threshold, threshold_mask


def _grey(path):
    # The golden values were computed on the PNG read as 8-bit grey (PIL "L") / 255.
    return np.asarray(Image.open(path).convert("L"), dtype=np.float64) / 255.0


def test_median_conventions_differ_on_even_sizes():
    image = np.array([[4.0, 1.0], [3.0, 2.0]])
    assert median_threshold(image, "lower_median") == 2.0
    assert median_threshold(image, "quantile") == 2.5
    np.testing.assert_array_equal(threshold_mask(image, "lower_median"), [[True, False], [True, False]])
    np.testing.assert_array_equal(threshold_mask(image, "quantile"), [[True, False], [True, False]])
    # No pixel lies strictly between the two middle values, so on one image both conventions select the same pixels;
    # they differ only when the two middle values are adjacent floats (the interpolation rounds up to the upper one).
    row = np.array([[1.0, 2.0, 3.0, 4.0]])
    np.testing.assert_array_equal(threshold_mask(row, "lower_median"), threshold_mask(row, "quantile"))


def test_thresholds_match_torch_exactly(rng):
    batch = rng.random((3, 17, 12)).astype(np.float32)
    t = torch.from_numpy(batch)
    expected_low = [torch.median(t[i]).item() for i in range(3)]
    expected_q = [torch.quantile(t[i].flatten(), 0.5).item() for i in range(3)]
    np.testing.assert_array_equal(median_threshold(batch, "lower_median"), expected_low)
    np.testing.assert_array_equal(median_threshold(batch, "quantile"), expected_q)
    # torch input works too
    assert median_threshold(t[0], "quantile") == expected_q[0]


def test_iou_hand_computed():
    real = np.array([[0.0, 1.0, 2.0, 3.0]])          # lower median 1 -> mask [F, F, T, T]
    generated = np.array([[3.0, 0.0, 2.0, 1.0]])     # quantile 1.5 -> mask [T, F, T, F]
    assert iou(real, generated) == pytest.approx(1 / 3)
    assert iou(real, real) == 1.0
    assert mask_iou(np.zeros((2, 2), bool), np.zeros((2, 2), bool)) == 1.0
    assert mask_iou(np.eye(2, dtype=bool), ~np.eye(2, dtype=bool)) == 0.0


def test_iou_batched_and_validated(rng):
    a = rng.random((4, 8, 8))
    values = iou(a, a[:, ::-1])
    assert values.shape == (4,)
    assert np.all((values >= 0) & (values <= 1))
    np.testing.assert_allclose(iou(a, a), 1.0)
    with pytest.raises(ValueError, match="same shape"):
        iou(a, a[:, :4])
    with pytest.raises(ValueError, match="method"):
        threshold_mask(a, "mean")


def test_iou_reproduces_golden_values(shared_data, shared_golden):
    expected = json.loads((shared_golden / "metrics" / "expected.json").read_text())
    image = _grey(shared_data / "celldiff_samples" / "hpa" / "nls" / "protein.png")
    got = {
        "vs_itself": iou(image, image),
        "vs_horizontal_flip": iou(image, image[:, ::-1]),
        "vs_vertical_flip": iou(image, image[::-1]),
        "vs_rot90": iou(image, np.rot90(image)),
        "vs_gaussian_blur_sigma2": iou(image, gaussian_filter(image, 2.0)),
    }
    # Values (published conventions): itself 1.0, h-flip 0.5086, v-flip 0.4048, rot90 0.1867, blur 0.8489.
    for key, value in expected["iou_hpa_nls_protein"].items():
        assert got[key] == pytest.approx(value, abs=1e-7), key
    nls = _grey(shared_data / "celldiff_samples" / "opencell" / "nls" / "protein.png")
    nes = _grey(shared_data / "celldiff_samples" / "opencell" / "nes" / "protein.png")
    assert iou(nls, nes) == pytest.approx(expected["iou_opencell_nls_vs_nes_protein"], abs=1e-7)  # 0.3096
