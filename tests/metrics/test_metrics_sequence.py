"""Multi-label sequence -> localization scores against scikit-learn."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, average_precision_score, f1_score

from locscope.metrics.sequence import average_precision, multilabel_scores, multilabel_targets

LEVEL3 = ["nucleus", "cytosol", "endomembrane-system", "plasma-membrane", "mitochondria", "nucleoli", "cytoskeleton"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scores_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.random((80, 7)) < 0.3
    y[0] = True                                    # every class has a positive
    scores = np.round(rng.random((80, 7)) * 0.6 + 0.4 * y, 1)   # informative, with ties
    ours = multilabel_scores(y, scores)
    assert ours["macro_ap"] == pytest.approx(average_precision_score(y, scores, average="macro"), abs=1e-12)
    assert ours["micro_ap"] == pytest.approx(average_precision_score(y, scores, average="micro"), abs=1e-12)
    pred = scores >= 0.5
    assert ours["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro", zero_division=0), abs=1e-12)
    assert ours["micro_f1"] == pytest.approx(f1_score(y, pred, average="micro", zero_division=0), abs=1e-12)
    assert ours["exact_match"] == pytest.approx(accuracy_score(y, pred), abs=1e-12)


def test_hand_computed_ap_and_targets():
    # ranking: pos, neg, pos -> precision at recalls .5, 1: 1, 2/3 -> AP = .5 * 1 + .5 * 2/3
    assert average_precision([1, 0, 1], [0.9, 0.8, 0.7]) == pytest.approx(0.5 + 1 / 3)
    assert np.isnan(average_precision([0, 0], [0.1, 0.2]))
    targets = multilabel_targets([["nucleus", "cytosol"], ["mitochondria"]], LEVEL3)
    assert targets.sum() == 3 and targets[1, 4]
    with pytest.raises(ValueError, match="item 1: label 'golgi'"):
        multilabel_targets([["nucleus"], ["golgi"]], LEVEL3)
    perfect = multilabel_scores(targets, targets.astype(float))
    assert perfect["exact_match"] == 1.0 and perfect["macro_f1"] == pytest.approx(3 / 7)
    assert perfect["n_classes_without_positives"] == 4 and perfect["macro_ap"] == 1.0


def test_hierarchical_scores_map_level1_up_the_ontology():
    from locscope.data.ontology import LEVEL1, LEVEL3

    from locscope.metrics.sequence import coarsen_scores, hierarchical_scores

    scores = np.zeros((2, len(LEVEL1)))
    scores[0, LEVEL1.index("nucleoplasm")] = 0.9
    scores[0, LEVEL1.index("nuclear-speckles")] = 0.4
    scores[1, LEVEL1.index("golgi-apparatus")] = 0.7
    scores[1, LEVEL1.index("cytosol")] = 0.2
    coarse, classes = coarsen_scores(scores, "level3")
    assert classes == list(LEVEL3)
    assert coarse[0, LEVEL3.index("nucleus")] == 0.9          # max over the nucleus members
    assert coarse[1, LEVEL3.index("endomembrane-system")] == 0.7
    result = hierarchical_scores([["nuclear-speckles"], ["endoplasmic-reticulum", "cytosol"]], scores)
    level3 = result["level3"]
    assert "plastid" not in level3["classes"] and len(level3["classes"]) == 7
    assert level3["exact_match"] == 0.5              # item 2 misses cytosol (0.2 < 0.5)
    assert level3["micro_f1"] == pytest.approx(2 * 2 / (2 * 2 + 0 + 1))
    # level 2 separates golgi (predicted) from ER (true): TP nucleus, FP golgi, FN ER + cytosol
    assert result["level2"]["exact_match"] == 0.5
    assert result["level2"]["micro_f1"] == pytest.approx(2 * 1 / (2 * 1 + 1 + 2))
