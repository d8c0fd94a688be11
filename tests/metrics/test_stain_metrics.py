"""Virtual-staining metrics: handcrafted profiles, NN class match, MTdist, CPcor, the Table-2 bundle."""

from __future__ import annotations

import numpy as np
import pytest

from locscope.metrics.staining import (
    cellprofiler_features, channel_features, feature_correlation, matching_class_distance, nn_class_match,
    staining_metrics,
)


def test_channel_features_respond_to_intensity_texture_and_granularity(rng):
    flat = np.full((32, 32), 2.0)
    spots = flat.copy()
    spots[::6, ::6] = 10.0  # isolated bright pixels: removed by the smallest opening
    f_flat, f_spots = channel_features(flat), channel_features(spots)
    assert f_flat.shape == (14,) and np.isfinite(f_spots).all()
    assert f_spots[0] > f_flat[0] and f_spots[1] > 0 == f_flat[1]  # mean, std
    assert f_spots[10] > 0.5  # granularity at radius 1 takes most of the spot signal
    shifted = np.zeros((32, 32))
    shifted[2:8, 2:8] = 1.0
    assert channel_features(shifted)[5] > 15  # mass displacement from the centre, pixels
    assert cellprofiler_features(rng.random((3, 2, 16, 16))).shape == (3, 28)


def test_nn_class_match_and_distance_on_known_points():
    features = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    assert nn_class_match(features, ["a", "a", "b", "b"]) == 1.0
    assert nn_class_match(features, ["a", "b", "a", "b"]) == 0.0
    assert nn_class_match(features, ["a", "b", "a", "b"], k=2) == 0.5  # items 1 and 3 find their class second
    tight = matching_class_distance(features, ["a", "a", "b", "b"])
    loose = matching_class_distance(features, ["a", "b", "a", "b"])
    assert tight == pytest.approx(1 - 0.9 / np.hypot(0.9, 0.1)) and loose > tight
    with pytest.raises(ValueError, match="k=4"):
        nn_class_match(features, "abab", k=4)


def test_feature_correlation(rng):
    real = rng.normal(size=(20, 4))
    assert feature_correlation(real, real * 3 + 1) == pytest.approx(1.0)
    assert feature_correlation(real, -real) == pytest.approx(-1.0)
    assert abs(feature_correlation(real, rng.normal(size=(20, 4)))) < 0.5


def test_staining_metrics_perfect_and_noisy_predictions(rng):
    real = rng.normal(size=(6, 2, 24, 24))
    labels = ["x", "x", "x", "y", "y", "y"]
    perfect = staining_metrics(real, real, labels, ("dna", "mito"))
    assert perfect["pcc"] == pytest.approx(1.0) and perfect["ssim"] == pytest.approx(1.0)
    assert perfect["mse"] == 0 and perfect["mae"] == 0 and perfect["cp_cor"] == pytest.approx(1.0)
    assert perfect["nn_match"] == perfect["real_nn_match"] and set(perfect["per_channel"]["pcc"]) == {"dna", "mito"}
    noisy = staining_metrics(real, real + rng.normal(size=real.shape), labels, ("dna", "mito"))
    assert 0.5 < noisy["pcc"] < 0.9 and noisy["mse"] == pytest.approx(1.0, abs=0.1) and noisy["cp_cor"] < 1.0
