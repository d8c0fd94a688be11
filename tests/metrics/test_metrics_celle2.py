"""CELL-E 2 image metrics on constructed cases."""

import numpy as np
import pytest

from locscope.metrics.celle2 import binary_pixel_mae, nucleus_proportion, nucleus_proportion_error, pdf_mae


def test_nucleus_proportion_hand_computed():
    protein = np.array([[1, 1, 0, 0], [1, 1, 0, 0]], bool)
    nucleus = np.array([[1, 0, 0, 0], [1, 0, 0, 1]], bool)
    assert nucleus_proportion(protein, nucleus) == pytest.approx(0.5)
    assert np.isnan(nucleus_proportion(np.zeros((2, 4), bool), nucleus))


def test_nucleus_proportion_error_and_pixel_mae():
    nucleus = np.zeros((4, 4), bool)
    nucleus[:, :2] = True
    real = np.zeros((4, 4))
    real[:, :2] = 1.0          # nuclear protein: above-median half is the nucleus
    generated = real[:, ::-1]  # cytoplasmic copy
    assert nucleus_proportion_error(real, real, nucleus) == 0.0
    assert nucleus_proportion_error(real, generated, nucleus) == pytest.approx(1.0)
    assert binary_pixel_mae(real, real) == 0.0
    assert binary_pixel_mae(real, generated) == pytest.approx(1.0)
    binary = (real > 0.5).astype(float)
    assert binary_pixel_mae(real, binary, generated_is_binary=True) == 0.0


def test_pdf_mae():
    real = np.array([[10.0, 20.0], [30.0, 50.0]])        # min-max -> [0, .25, .5, 1]
    heat = np.array([[0.0, 0.5], [0.5, 0.5]])
    assert pdf_mae(real, heat) == pytest.approx((0 + 0.25 + 0 + 0.5) / 4)
    assert pdf_mae(np.full((2, 2), 3.0), np.zeros((2, 2))) == 0.0
    batch = np.stack([real, real])
    np.testing.assert_allclose(pdf_mae(batch, np.stack([heat, heat])), [0.1875, 0.1875])
