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


# ---- generation metrics (metric=) -------------------------------------------------------------

def _scores(preds, golds, metric):
    from lmadapt.eval.metrics import per_example_scores

    return per_example_scores(preds, golds, metric).tolist()


def test_numeric_compares_final_numbers_by_value():
    from lmadapt.eval.metrics import final_number

    preds = ["The answer is 42.", "1234.0", "no number here", "It drops to -3.5 degrees.", "$5",
             "7 apples, then 8 #### 12", "0.50", "3-5 is a range ending at 5"]
    golds = ["#### 42", "1,234", "3", "-3.5", "5", "Worked: 4 + 8 = 12 #### 12", ".5", "-5"]
    assert _scores(preds, golds, "numeric") == [1, 1, 0, 1, 1, 1, 1, 0]
    # GSM `#### N` wins over a later number; otherwise the last number; minus only as a sign
    assert final_number("#### 42 (checked in step 7)") == 42
    assert final_number("12 apples and 30 pears") == 30
    assert final_number("$1,234.50") == final_number("1234.5")
    assert final_number("3-5") == 5 and final_number("x = -7") == -7
    assert final_number("no digits") is None


def test_numeric_counts_a_gold_without_a_number_wrong_and_says_so():
    with pytest.warns(UserWarning, match="1 of 2 gold answers hold no number"):
        assert _scores(["3", "none"], ["3", "none"], "numeric") == [1, 0]


def test_contains_finds_the_normalised_gold_in_the_prediction():
    preds = ["I think it is Paris, France.", "LONDON", "Berlin", "", "paris"]
    golds = ["paris", "London.", "Bonn", "", "Paris, France"]
    assert _scores(preds, golds, "contains") == [1, 1, 0, 1, 0]
    assert _scores(["something"], [""], "contains") == [0]  # an empty gold is not found everywhere


PAIRS = [("the cat sat on the mat", "the cat sat"), ("a quick brown fox", "the quick brown dog jumps"),
         ("forty two", "42")]


def test_rouge_l_is_the_rouge_score_f_measure_per_example():
    from rouge_score.rouge_scorer import RougeScorer

    scorer = RougeScorer(["rougeL"])
    preds, golds = [p for p, _ in PAIRS], [g for _, g in PAIRS]
    expected = [scorer.score(g, p)["rougeL"].fmeasure for p, g in PAIRS]
    assert _scores(preds, golds, "rouge_l") == pytest.approx(expected)
    assert expected[0] == pytest.approx(2 * 0.5 * 1.0 / 1.5)  # LCS 3: precision 3/6, recall 3/3
    assert _scores(["The same words"], ["the same words"], "rouge_l") == [1.0]
    assert _scores(["alpha beta"], ["gamma delta"], "rouge_l") == [0.0]
    scored = score_predictions(preds, golds, "generation", metric="rouge_l")
    assert scored["metric"] == "rouge_l" and scored["score"] == pytest.approx(np.mean(expected))


def test_chrf_is_sacrebleu_sentence_chrf_scaled_to_0_1():
    from sacrebleu.metrics import CHRF

    chrf = CHRF()
    preds, golds = [p for p, _ in PAIRS], [g for _, g in PAIRS]
    expected = [chrf.sentence_score(p, [g]).score / 100 for p, g in PAIRS]
    assert _scores(preds, golds, "chrf") == pytest.approx(expected)
    assert 0 < expected[0] < 1 and expected[2] == 0.0
    assert _scores(["identical text"], ["identical text"], "chrf") == [pytest.approx(1.0)]
    assert _scores(["abc"], ["xyz"], "chrf") == [0.0]
    scored = score_predictions(preds, golds, "generation", metric="chrf")
    assert scored["score"] == pytest.approx(np.mean(expected))


@pytest.mark.parametrize("metric", ["exact_match", "numeric", "contains", "rouge_l", "chrf"])
def test_every_generation_metric_has_a_ci_around_its_mean(metric):
    rng = np.random.default_rng(0)
    golds = [f"the answer is {i} #### {i}" for i in range(60)]
    preds = [g if rng.random() < 0.6 else f"maybe {i + 1}" for i, g in enumerate(golds)]
    scored = score_predictions(preds, golds, "generation", seed=3, metric=metric)
    assert scored["metric"] == metric
    assert 0 < scored["ci_low"] < scored["score"] < scored["ci_high"] < 1
    assert score_predictions(preds, golds, "generation", seed=3, metric=metric) == scored  # seeded


def test_default_metrics_by_kind():
    assert score_predictions(["A."], ["a"], "generation")["metric"] == "exact_match"
    assert score_predictions(["a"], ["a"], "classification")["metric"] == "accuracy"


def test_metric_errors_are_one_line_with_the_choices():
    from lmadapt.data.task import Example, Task
    from lmadapt.errors import LmadaptError

    with pytest.raises(LmadaptError) as bad:
        score_predictions(["a"], ["a"], "generation", metric="bleu")
    assert "unknown metric 'bleu'" in str(bad.value) and "rouge_l" in str(bad.value)
    assert "\n" not in str(bad.value)
    with pytest.raises(LmadaptError, match="'rouge_l' is not for a classification task; use one of: accuracy"):
        Task("t", "classification", [Example("a", "x"), Example("b", "y")], metric="rouge_l")
    with pytest.raises(LmadaptError, match="unknown metric 'accuracy_'"):
        Task("t", "generation", [Example("a", "x")], metric="accuracy_")
    task = Task("t", "generation", [Example("a", "x")], metric="chrf")
    assert task.metric == "chrf" and Task.skeleton(**task.meta()).metric == "chrf"
    assert task.with_examples([Example("b", "y")]).metric == "chrf"


def test_cli_metric_errors_are_one_line(tmp_path, run_cli, tiny_llama, toy_data):
    from tiny import toy_rows, write_jsonl

    gen = write_jsonl(tmp_path / "gen.jsonl", toy_rows(12, seed=3, kind="generation"))
    code, err = run_cli(["tune", "--method", "zero-shot", "--model", tiny_llama, "--train", gen,
                         "--out", tmp_path / "r1", "metric=bleu"])
    assert code != 0 and "unknown metric 'bleu'" in err and len(err.strip().splitlines()) == 1
    code, err = run_cli(["tune", "--method", "zero-shot", "--model", tiny_llama, "--train", toy_data[0],
                         "--out", tmp_path / "r2", "metric=chrf"])
    assert code != 0 and "not for a classification task" in err and len(err.strip().splitlines()) == 1


def test_metric_travels_with_a_saved_run(tmp_path, run_cli, tiny_llama):
    import json

    from typer.testing import CliRunner

    from lmadapt.cli import app
    from tiny import toy_rows, write_jsonl

    train = write_jsonl(tmp_path / "train.jsonl", toy_rows(12, seed=3, kind="generation"))
    held = write_jsonl(tmp_path / "held.jsonl", toy_rows(6, seed=4, kind="generation"))
    out = tmp_path / "run"
    code, err = run_cli(["tune", "--method", "zero-shot", "--model", tiny_llama, "--train", train,
                         "--eval", held, "--out", out, "metric=contains", "max_new_tokens=3"])
    assert code == 0, err
    assert json.loads((out / "record.json").read_text())["metric"] == "contains"
    assert json.loads((out / "lmadapt.json").read_text())["task"]["metric"] == "contains"

    def eval_json(*extra: str) -> dict:
        result = CliRunner().invoke(app, ["eval", str(out), "--data", str(held), "--json", *extra])
        assert result.exit_code == 0, result.output
        return json.loads(next(line for line in result.output.splitlines() if line.startswith("{")))

    scores = eval_json()
    assert scores["metric"] == "contains" and scores["ci_low"] <= scores["score"] <= scores["ci_high"]
    assert eval_json("metric=rouge_l")["metric"] == "rouge_l"  # an override, as setting or option
    with pytest.warns(UserWarning, match="6 of 6 gold answers hold no number"):  # yes/no golds
        assert eval_json("--metric", "numeric")["metric"] == "numeric"
    code, err = run_cli(["eval", out, "--data", held, "metric=accuracy"])
    assert code != 0 and "not for a generation task" in err and len(err.strip().splitlines()) == 1
    code, err = run_cli(["eval", out, "--data", held, "lr=1"])
    assert code != 0 and "only metric=NAME" in err
