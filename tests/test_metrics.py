import numpy as np
import pytest

from lmadapt.eval.metrics import accuracy, bootstrap_ci, exact_match, macro_f1, score_predictions


def test_accuracy_and_macro_f1_by_hand():
    golds = ["a", "a", "b", "b", "c"]
    preds = ["a", "b", "b", "b", "a"]
    assert accuracy(preds, golds) == pytest.approx(3 / 5)
    # per class F1: a: tp1 fp1 fn1 → 0.5; b: tp2 fp1 fn0 → 0.8; c: tp0 fp0 fn1 → 0
    assert macro_f1(preds, golds) == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_exact_match_normalises():
    assert exact_match(["The Answer. ", "x"], ["the  answer", "y"]) == 0.5


def test_bootstrap_ci_contains_score_and_narrows_with_n():
    rng = np.random.default_rng(0)
    golds = ["y"] * 400
    preds = ["y" if rng.random() < 0.7 else "n" for _ in golds]
    scored = score_predictions(preds, golds, "classification")
    assert scored["ci_low"] < scored["score"] < scored["ci_high"]
    wide = score_predictions(preds[:40], golds[:40], "classification")
    assert (wide["ci_high"] - wide["ci_low"]) > (scored["ci_high"] - scored["ci_low"])
    low, high = bootstrap_ci(accuracy, preds, golds, n_resamples=300)
    assert low == pytest.approx(scored["ci_low"], abs=0.03) and high == pytest.approx(scored["ci_high"], abs=0.03)
