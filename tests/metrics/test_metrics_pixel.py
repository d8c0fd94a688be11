"""SSIM, PSNR, PCC, MSE, MAE: identical images, hand-computed cases, per-channel batching."""

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from locscope.metrics.pixel import mae, mse, pcc, pixel_metrics, psnr, ssim


def test_identical_images():
    image = np.random.default_rng(0).random((2, 3, 24, 24))
    values = pixel_metrics(image, image, data_range=1.0)
    for name in ("ssim", "pcc"):
        np.testing.assert_allclose(values[name], 1.0, atol=1e-6)
        assert values[name].shape == (2, 3)
    np.testing.assert_array_equal(values["mse"], 0.0)
    np.testing.assert_array_equal(values["mae"], 0.0)
    assert np.all(np.isinf(values["psnr"]))


def test_hand_computed_errors():
    real = np.zeros((2, 2))
    generated = np.array([[0.0, 0.5], [1.0, 0.5]])
    assert mse(real, generated) == pytest.approx((0.25 + 1.0 + 0.25) / 4)
    assert mae(real, generated) == pytest.approx(0.5)
    assert psnr(real, generated, data_range=1.0) == pytest.approx(10 * np.log10(1 / 0.375))
    assert psnr(real * 255, generated * 255, data_range=255) == pytest.approx(10 * np.log10(1 / 0.375))


def test_pcc_linear_and_anticorrelated():
    x = np.random.default_rng(1).random((16, 16))
    assert pcc(x, 3 * x + 2) == pytest.approx(1.0)
    assert pcc(x, -x) == pytest.approx(-1.0)
    assert np.isnan(pcc(x, np.ones_like(x)))
    y = np.random.default_rng(2).random((16, 16))
    assert pcc(x, y) == pytest.approx(np.corrcoef(x.ravel(), y.ravel())[0, 1])


def test_ssim_matches_torchmetrics(rng):
    import torch
    from torchmetrics.functional.image import structural_similarity_index_measure

    real = rng.random((2, 40, 33))
    generated = np.clip(real + rng.normal(scale=0.2, size=real.shape), 0, 1)
    expected = structural_similarity_index_measure(torch.from_numpy(generated[:, None]), torch.from_numpy(real[:, None]),
                                                   data_range=1.0, reduction="none").numpy()
    np.testing.assert_allclose(ssim(real, generated, data_range=1.0), expected, rtol=1e-9)


def test_ssim_matches_gaussian_reference_and_declared_range():
    rng = np.random.default_rng(3)
    real = rng.random((48, 48))
    generated = np.clip(real + rng.normal(scale=0.1, size=real.shape), 0, 1)
    ours = ssim(real, generated, data_range=1.0)
    reference = structural_similarity(real, generated, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False)
    assert ours == pytest.approx(reference, abs=0.02)   # same formula; borders are handled differently
    assert 0.3 < ours < 0.95
    # declaring a larger range shrinks the constants' effect differently: values change
    assert ssim(real, generated, data_range=255.0) != pytest.approx(ours)
    with pytest.raises(ValueError, match="data_range"):
        ssim(real, generated, data_range=0)
