"""Metrics against the simulator's true compartment masks."""

import numpy as np
import pytest

from locscope.metrics.truth import iou_vs_truth, localization_fidelity, true_protein_mask


def test_truth_metrics_hand_computed():
    masks = {"nucleoplasm": np.zeros((4, 4), bool), "cytosol": np.zeros((4, 4), bool)}
    masks["nucleoplasm"][:2, :2] = True
    masks["cytosol"][2:, :] = True
    truth = true_protein_mask(masks, ["nucleoplasm", "cytosol"])
    assert truth.sum() == 12
    perfect = truth.astype(float)
    assert localization_fidelity(perfect, truth) == 1.0
    half = np.zeros((4, 4))
    half[0, 0] = 1.0
    half[0, 3] = 3.0
    assert localization_fidelity(half, truth) == pytest.approx(0.25)
    nuclear = np.zeros((4, 4))
    nuclear[:2, :2] = 1.0      # quantile 0 -> mask = nucleus (4 px) vs truth (12 px)
    assert iou_vs_truth(nuclear, truth) == pytest.approx(4 / 12)
    textured = nuclear + 0.01 * np.arange(16).reshape(4, 4)   # no ties: the median keeps 8 of 16 pixels
    assert iou_vs_truth(textured, masks["nucleoplasm"]) == pytest.approx(4 / 8)
    assert iou_vs_truth(textured, masks["nucleoplasm"], method="otsu") == 1.0   # Otsu is not capped at 2 f
    assert np.isnan(localization_fidelity(np.zeros((4, 4)), truth))
    with pytest.raises(ValueError, match="no mask"):
        true_protein_mask(masks, ["mitochondria"])
