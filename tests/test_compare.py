"""The compare protocol (issue 14): selection on validation only, seeded search, seeds, paired
tests against the best, the recommendation, and resume after a kill at each stage."""

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import lmadapt.compare as compare_mod
import lmadapt.run as run_mod
from lmadapt.compare import CompareConfig, compare, method_configs
from lmadapt.data.loaders import DataSpec, load_task
from lmadapt.data.task import validation_split
from lmadapt.errors import LmadaptError
from lmadapt.eval.significance import (
    compare_to_best,
    detectable_difference,
    examples_to_separate,
    holm,
    paired_bootstrap,
    seeds_and_examples_ci,
)
from lmadapt.methods import REGISTRY
from lmadapt.models.load import ModelSpec
from lmadapt.report.recommend import Budgets, parse_bytes, recommend
from lmadapt.report.record import RunRecord, RunStore
from lmadapt.train.config import TrainConfig
from lmadapt.train.loop import TrainResult, train

# ---- statistics, against hand computations ---------------------------------------------------


def test_paired_bootstrap_matches_a_hand_computation():
    a = np.array([1, 1, 0, 1, 0, 1, 1, 0], dtype=float)
    b = np.array([0, 1, 0, 0, 0, 1, 0, 0], dtype=float)
    got = paired_bootstrap(a, b, n_resamples=500, seed=3)
    d = a - b
    rng = np.random.default_rng(3)
    assert got.diff == pytest.approx(d.mean()) == pytest.approx(3 / 8)
    rng = np.random.default_rng(3)  # the same draws, by hand
    means = d[rng.integers(0, 8, size=(500, 8))].mean(axis=1)
    assert (got.ci_low, got.ci_high) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])))
    extreme = np.sum(np.abs(means - d.mean()) >= d.mean() - 1e-12)
    assert got.p == pytest.approx((extreme + 1) / 501)


def test_paired_bootstrap_extremes():
    same = np.array([1.0, 0.0, 1.0, 1.0])
    assert paired_bootstrap(same, same).p == 1.0  # no difference: every resample is as extreme
    better = np.ones(50)
    assert paired_bootstrap(better, np.zeros(50), n_resamples=999).p == pytest.approx(1 / 1000)


def test_holm_adjusts_step_down_and_keeps_order():
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_compare_to_best_marks_ties_after_correction():
    rng = np.random.default_rng(0)
    best = (rng.random(200) < 0.8).astype(float)
    close = best.copy()
    close[:4] = 1 - close[:4]  # differs on 4 of 200 examples: not separable
    far = (rng.random(200) < 0.3).astype(float)
    out = compare_to_best({"best": best, "close": close, "far": far}, "best")
    assert out["best"].tied_best and out["close"].tied_best and not out["far"].tied_best
    assert out["far"].p_holm >= out["far"].p and out["far"].diff < -0.3


def test_examples_to_separate_by_the_normal_formula():
    a = np.array([1, 0, 1, 1, 0, 1, 1, 1, 0, 1], dtype=float)
    b = np.array([1, 0, 0, 1, 0, 1, 0, 1, 0, 1], dtype=float)
    d = a - b
    z = 1.959963984540054 + 0.8416212335729143
    assert examples_to_separate(a, b) == int(np.ceil((z * d.std(ddof=1) / d.mean()) ** 2))
    assert examples_to_separate(a, a) is None


def test_detectable_difference_by_the_normal_formula():
    a = np.array([1, 0, 1, 1, 0, 1, 1, 1, 0, 1], dtype=float)
    b = np.array([1, 0, 0, 1, 0, 1, 0, 1, 0, 1], dtype=float)
    z = 1.959963984540054 + 0.8416212335729143
    assert detectable_difference(a, b) == pytest.approx(z * (a - b).std(ddof=1) / np.sqrt(10))
    assert detectable_difference(a, a) == 0.0


def test_seed_and_example_ci_covers_seed_spread():
    flat = np.full((3, 20), 0.5)
    assert seeds_and_examples_ci(flat) == (0.5, 0.5)
    rows = np.vstack([np.zeros(20), np.ones(20)])  # seeds disagree completely, examples agree
    low, high = seeds_and_examples_ci(rows, n_resamples=400)
    assert low == 0.0 and high == 1.0  # an examples-only interval would be a point


# ---- validation split and early stopping -----------------------------------------------------


def test_validation_split_is_stratified_and_disjoint(toy_data):
    task = load_task(toy_data[0], DataSpec())
    train_part, val = validation_split(task, 0.25, seed=1)
    assert len(val.examples) == 16 and len(train_part.examples) == 48
    assert sorted(ex.target for ex in val.examples).count("positive") == 8
    assert not {ex.text for ex in val.examples} & {ex.text for ex in train_part.examples}
    assert validation_split(task, 0.25, seed=1)[1].examples == val.examples
    with pytest.raises(LmadaptError, match="val_split"):
        validation_split(task.with_examples(task.examples[:1]), 0.5, 0)


class _Scripted:
    """A stand-in TaskModel: one weight; the loss pulls it towards 1."""

    def __init__(self) -> None:
        self.model = torch.nn.Linear(1, 1, bias=False)
        torch.nn.init.zeros_(self.model.weight)

    def collate(self, examples):
        return {"x": torch.ones(len(examples), 1)}

    def loss(self, model, batch):
        return ((model(batch["x"]) - 1) ** 2).mean()

    def count_tokens(self, batch):
        return 1


def test_early_stopping_keeps_the_best_epochs_weights(toy_data):
    task = load_task(toy_data[0], DataSpec())
    tm = _Scripted()
    scores, weights = iter([0.5, 0.9, 0.7, 0.6, 0.95]), {}

    def eval_fn(epoch):
        weights[epoch] = tm.model.weight.detach().clone()
        return {"score": next(scores)}

    cfg = TrainConfig(epochs=5, batch_size=16, lr=0.05, early_stop_patience=2, warmup_ratio=0.0)
    result = train(tm, task.examples, cfg, None, eval_fn)
    assert isinstance(result, TrainResult)
    assert [row["epoch"] for row in result.epoch_evals] == [1, 2, 3, 4]  # stopped: 2 epochs no better
    assert result.best_epoch == 2 and len(result.losses) == 16
    assert torch.equal(tm.model.weight, weights[2]) and not torch.equal(weights[2], weights[4])


def test_early_stopping_needs_a_validation_set(tiny_bert, toy_data, tmp_path, run_cli):
    code, err = run_cli(["tune", "--method", "head", "--model", str(tiny_bert), "--train", str(toy_data[0]),
                         "--out", str(tmp_path / "o"), "early_stop_patience=1", "val_split=0"])
    assert code == 2 and "early_stop_patience needs a validation set" in err


# ---- the compare protocol on tiny models -----------------------------------------------------


@pytest.fixture
def tasks(toy_data):
    return load_task(toy_data[0], DataSpec()), load_task(toy_data[1], DataSpec(), name="eval")


def _compare(methods, model, tasks, out, settings=None, **train):
    cfg = TrainConfig(**{"epochs": 2, "batch_size": 8, **train})
    names = [m for m, _ in methods]
    configs = method_configs([(m, None) for m in names], {"cv_folds": 2} if "features" in names else {})
    return compare(methods, ModelSpec(model=str(model)), tasks[0], tasks[1], configs, cfg, out,
                   settings=settings or CompareConfig())


def test_selection_never_reads_the_eval_set(tiny_bert, tasks, tmp_path, monkeypatch):
    """Instrumented: every fit watches the validation set, every search trial is scored on it,
    and the eval set is scored exactly once per final model (methods x seeds)."""
    watched, scored = [], []
    original_evaluate = run_mod.evaluate

    def spy_evaluate(adapted, task, *args, **kwargs):
        scored.append(task.name)
        return original_evaluate(adapted, task, *args, **kwargs)

    monkeypatch.setattr(run_mod, "evaluate", spy_evaluate)
    for name in ("head", "lora"):
        cls, original_fit = REGISTRY[name], REGISTRY[name].fit

        def spy_fit(self, train_task, eval_task, cfg, ctx, _fit=original_fit):
            watched.append(eval_task.name)
            return _fit(self, train_task, eval_task, cfg, ctx)

        monkeypatch.setattr(cls, "fit", spy_fit)
    records = _compare([("head", None), ("lora", None)], tiny_bert, tasks, tmp_path / "c",
                       CompareConfig(search_trials=2, seeds=2))
    # 2 x (2 trials + 1 seed): the first seed's final model is the best trial's fit, scored again
    assert watched and all(name.endswith(":val") for name in watched)
    assert len(watched) == 6
    # scored: 4 search trials on validation, then each method's 2 seeds once on the eval set
    assert len(scored) == 8 and scored.count("eval") == 4
    assert all(name.endswith(":val") for name in scored if name != "eval")
    assert all(r.selection.startswith("validation (n=") for r in records)
    assert all(r.search_trials == 2 and "lr" in r.selected and len(r.seed_scores) == 2 for r in records)


def test_selection_does_not_depend_on_the_eval_labels(tiny_bert, tasks, tmp_path):
    """Flipping every eval label changes the scores but not one choice made."""
    train_task, eval_task = tasks
    flip = {"positive": "negative", "negative": "positive"}
    flipped = eval_task.with_examples([dataclasses.replace(ex, target=flip[ex.target]) for ex in eval_task.examples])
    runs = [_compare([("head", None)], tiny_bert, (train_task, e), tmp_path / name, CompareConfig(search_trials=3))[0]
            for name, e in (("a", eval_task), ("b", flipped))]
    assert runs[0].selected == runs[1].selected and runs[0].val_score == runs[1].val_score
    assert runs[0].score + runs[1].score == pytest.approx(1.0)


def test_search_is_reproducible_with_a_seed(tiny_bert, tasks, tmp_path):
    import optuna

    studies = []
    for name in ("a", "b"):
        record = _compare([("head", None)], tiny_bert, tasks, tmp_path / name, CompareConfig(search_trials=3),
                          seed=7)[0]
        storage = f"sqlite:///{tmp_path / name / 'search.sqlite'}"
        (summary,) = optuna.get_all_study_summaries(storage)
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        studies.append(([t.params for t in study.trials], record.selected, record.score))
    assert studies[0] == studies[1] and len(studies[0][0]) == 3


def test_first_trial_runs_the_defaults(tiny_bert, tasks, tmp_path):
    """A fresh study's first trial is the configuration a run without search would use (the
    method's default learning rate, a searched key's default), once per study: a resumed
    compare asking for more trials does not run it again."""
    import optuna

    from lmadapt.methods.base import default_lr
    from lmadapt.methods.head.config import HeadConfig

    for trials in (2, 3):  # the second call resumes the study with one more trial
        _compare([("head", None)], tiny_bert, tasks, tmp_path / "c", CompareConfig(search_trials=trials,
                 search_space="{batch_size: [4, 8]}"), resume=trials == 3)
    storage = f"sqlite:///{tmp_path / 'c' / 'search.sqlite'}"
    (summary,) = optuna.get_all_study_summaries(storage)
    trials = optuna.load_study(study_name=summary.study_name, storage=storage).trials
    first = trials[0].params
    assert first["lr"] == pytest.approx(default_lr(REGISTRY["head"], HeadConfig())) and first["batch_size"] == 8
    assert len(trials) == 3 and sum(t.params == first for t in trials) == 1


def test_first_seed_reuses_the_best_trials_fit(tiny_bert, tasks, tmp_path):
    """With a search, the first seed's final model is the best trial's fit (same settings, same
    seed), scored on the eval set: the same predictions as training that configuration afresh,
    and no search folder left behind."""
    searched = _compare([("lora", None)], tiny_bert, tasks, tmp_path / "s", CompareConfig(search_trials=2))[0]
    assert searched.extra["fit_from"].startswith("lora/trial-") and not (tmp_path / "s" / "search").exists()
    afresh = _compare([("lora", None)], tiny_bert, tasks, tmp_path / "a", lr=searched.selected["lr"])[0]
    assert "fit_from" not in afresh.extra and searched.score == afresh.score
    preds = [(tmp_path / d / "runs" / "lora" / "predictions.jsonl").read_text() for d in ("s", "a")]
    assert preds[0] == preds[1] and searched.train_steps == afresh.train_steps > 0
    assert searched.val_score == pytest.approx(afresh.val_score)
    assert (searched.trainable_params, searched.total_params) == (afresh.trainable_params, afresh.total_params)
    assert searched.trainable_params > 0


def test_two_processes_share_one_study(tiny_bert, toy_data, tmp_path):
    """Two `lmadapt compare` processes on one storage URL (different --out): the second
    continues the first's study, and the trials come from both."""
    import optuna

    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    base = [sys.executable, "-m", "lmadapt", "compare", "--methods", "head", "--model", str(tiny_bert),
            "--train", str(toy_data[0]), "--eval", str(toy_data[1]), "epochs=1", "batch_size=8",
            f"search_storage={storage}"]
    for out, trials in (("one", 2), ("two", 4)):
        done = subprocess.run([*base, "--out", str(tmp_path / out), f"search_trials={trials}"],
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    (summary,) = optuna.get_all_study_summaries(storage)
    trials = optuna.load_study(study_name=summary.study_name, storage=storage).trials
    assert len(trials) == 4 and len({t.user_attrs["worker"] for t in trials}) == 2


def test_paired_fields_and_recommendation_in_the_report(tiny_bert, tiny_llama, tasks, tmp_path):
    out = tmp_path / "c"
    records = _compare([("features", None), ("head", None), ("zero-shot", str(tiny_llama))], tiny_bert, tasks, out)
    best = max(records, key=lambda r: r.score)
    assert best.tied_best and best.diff_vs_best == 0.0
    for r in records:
        assert r.p_vs_best is not None and r.diff_ci_low <= r.diff_vs_best <= r.diff_ci_high
        assert r.diff_vs_best == pytest.approx(r.score - best.score)
    text = (out / "report.md").read_text()
    assert text.index("## Recommendation") < text.index("| method |")
    assert (out / "report.html").stat().st_size > 1000
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["label"] for r in rows] == ["features", "head", f"zero-shot@{tiny_llama.name}"]


def test_resume_after_a_kill_at_each_stage(tiny_bert, tasks, tmp_path, monkeypatch):
    """Killed during a search, between seeds, during the next method's seeds and while writing
    the summary: each `resume=true` continues (finished trials and runs are not redone) and the
    end state has every trial and run once, and no store row twice."""
    import optuna

    settings = CompareConfig(search_trials=2, seeds=2)
    methods = [("head", None), ("lora", None)]
    out = tmp_path / "c"
    original = run_mod.Evaluation

    class Killed(BaseException):
        pass

    def kill_at(n):
        calls = []

        def dying(*args, **kwargs):
            calls.append(1)
            if len(calls) == n:
                raise Killed
            return original(*args, **kwargs)
        return dying

    # evaluate calls of each attempt: head trial 2; head seed 1; lora seed 1 (after its 2 trials)
    for attempt, n in enumerate((2, 3, 4)):
        monkeypatch.setattr(run_mod, "Evaluation", kill_at(n))
        with pytest.raises(Killed):
            _compare(methods, tiny_bert, tasks, out, settings, resume=attempt > 0)
    monkeypatch.setattr(run_mod, "Evaluation", original)

    def killed_summary(*args, **kwargs):
        raise Killed
    monkeypatch.setattr(compare_mod, "pair_with_best", killed_summary)
    with pytest.raises(Killed):
        _compare(methods, tiny_bert, tasks, out, settings, resume=True)
    assert not out.exists()  # no half-written summary: the folder is still the partial one
    monkeypatch.undo()
    evaluated = []
    monkeypatch.setattr(run_mod, "Evaluation", lambda *a, **k: evaluated.append(1) or original(*a, **k))
    resumed = _compare(methods, tiny_bert, tasks, out, settings, resume=True)
    assert evaluated == []  # every trial and final run had finished: nothing is redone
    assert [len(r.seed_scores) for r in resumed] == [2, 2] and all(r.search_trials == 2 for r in resumed)
    storage = f"sqlite:///{out / 'search.sqlite'}"
    for summary in optuna.get_all_study_summaries(storage):
        trials = optuna.load_study(study_name=summary.study_name, storage=storage).trials
        done = [t for t in trials if t.state.is_finished() and t.state.name != "FAIL"]
        assert len(done) == 2 and done[0].params != done[1].params  # a resumed sampler does not redraw
    rows = RunStore(out / "runs.sqlite").all()
    assert len(rows) == 4 and len({(r.method, r.seed) for r in rows}) == 4
    assert json.loads((out / "results.jsonl").read_text().splitlines()[0])["label"] == "head"


# ---- recommendation ------------------------------------------------------------------------


def _record(method, score, params, seconds=1.0, tied=True, p=0.5, memory=2**30, latency=5.0):
    return RunRecord(method=method, model="m", task="t", metric="accuracy", score=score, ci_low=score - 0.1,
                     ci_high=score + 0.1, trainable_params=params, total_params=10**6, peak_memory_bytes=memory,
                     train_seconds=seconds, eval_examples_per_second=1.0, artifact_bytes=0, seed=0,
                     eval_examples=100, tied_best=tied, p_vs_best=p, label=method)


def test_recommendation_says_when_everything_ties():
    lines = recommend([_record("full", 0.82, 10**6), _record("lora", 0.80, 10**4), _record("icl", 0.79, 0)],
                      Budgets(), examples_needed=900)
    text = "\n".join(lines)
    assert "No method is distinguishable from the best" in text and "`icl`" in text.split("cheapest")[1]
    assert "about 900 eval examples" in text


def test_recommendation_names_best_cheapest_tied_and_budgets():
    records = [_record("full", 0.90, 10**6, seconds=100, p=1.0), _record("lora", 0.88, 10**4, seconds=40),
               _record("icl", 0.60, 0, seconds=0, tied=False, p=0.001)]
    text = "\n".join(recommend(records, Budgets(params=5e4, train_s=10)))
    assert "**Best: `full`**" in text and "**Cheapest tied with the best: `lora`**" in text
    assert "Within at most 50.0K trainable parameters: `lora`" in text and "(tied with the best)" in text
    assert "Within at most 10 s of training: `icl`, accuracy 0.600 (below the best (p = 0.001))" in text


def test_budget_sizes_parse_and_refuse():
    assert parse_bytes("8GB") == 8 * 2**30 and parse_bytes("512MiB") == 512 * 2**20 and parse_bytes("") == 0
    with pytest.raises(LmadaptError, match="budget_memory"):
        parse_bytes("lots")
    with pytest.raises(LmadaptError, match="seeds"):
        CompareConfig(seeds=0)


def test_early_stopping_resumes_with_the_best_weights(toy_data, tmp_path):
    """Interrupted after the best epoch, a resumed run still ends on that epoch's weights (kept
    beside the checkpoints), not on the last epoch's."""
    task = load_task(toy_data[0], DataSpec())
    cfg = TrainConfig(epochs=5, batch_size=16, lr=0.05, early_stop_patience=2, warmup_ratio=0.0, save_every=4)
    script = {1: 0.5, 2: 0.9, 3: 0.7, 4: 0.6, 5: 0.95}
    tm, weights = _Scripted(), {}

    def eval_fn(epoch):
        weights[epoch] = tm.model.weight.detach().clone()
        return {"score": script[epoch]}

    train(tm, task.examples, cfg, tmp_path, eval_fn, stop_at_step=12)  # 4 steps per epoch: after epoch 3
    assert (tmp_path / "checkpoints" / "best.safetensors").is_file()
    resumed = _Scripted()
    tm = resumed
    result = train(resumed, task.examples, dataclasses.replace(cfg, resume=True), tmp_path, eval_fn)
    assert result.best_epoch == 2 and [row["epoch"] for row in result.epoch_evals] == [1, 2, 3, 4]
    assert torch.equal(resumed.model.weight, weights[2])


def test_search_space_parsing_and_per_method_keys(tmp_path):
    from lmadapt.methods.icl.config import ICLConfig
    from lmadapt.methods.lora.config import LoraMethodConfig
    from lmadapt.search import load_space, method_space

    space_file = tmp_path / "space.yaml"
    space_file.write_text("lora_r: [4, 8]\nweight_decay: {low: 0.0, high: 0.1}\nshots: {low: 1, high: 8}\n")
    space = load_space(str(space_file))
    assert space["lora_r"].choices == (4, 8) and space["shots"].integer and not space["weight_decay"].log
    lora = method_space("lora", LoraMethodConfig(), space)
    assert set(lora) == {"lora_r", "weight_decay", "lr"} and lora["lr"].log and lora["lr"].low == 1e-4
    assert set(method_space("icl", ICLConfig(), space)) == {"shots", "weight_decay"}  # no lr: icl does not train
    assert set(load_space("{lr: {low: 1e-5, high: 1e-3, log: true}}")) == {"lr"}
    for bad, message in [("[1, 2]", "a mapping"), ("{lr: {low: 0, high: 1, log: true}}", "L > 0"),
                         ("{lr: []}", "non-empty list"), ("{lr: 3}", "expected"), ("nosuchfile.yaml", "no such file")]:
        with pytest.raises(LmadaptError, match=message):
            load_space(bad)


def test_unknown_search_key_is_one_line(tiny_bert, toy_data, tmp_path, run_cli):
    code, err = run_cli(["compare", "--methods", "head", "--model", str(tiny_bert), "--train", str(toy_data[0]),
                         "--out", str(tmp_path / "o"), "search_trials=2", "search_space={nope: [1, 2]}"])
    assert code == 2 and "search_space: 'nope' is not a setting" in err and not (tmp_path / "o").exists()


def test_per_example_scores_read_texts_with_unicode_line_separators(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"text": "a\u2028b\x85c", "target": "x", "prediction": "x", "score": 1.0},
            {"text": "d", "target": "y", "prediction": "x", "score": 0.0}]
    (run / "predictions.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    assert compare_mod._per_example([run], 2).tolist() == [[1.0, 0.0]]


def test_missing_tracker_stops_a_compare_before_any_method(tiny_bert, tasks, tmp_path, monkeypatch):
    """Without the tracker's package the compare stops once, with the one line, before running
    (not one skipped method per line)."""
    import lmadapt.train.trackers as trackers

    monkeypatch.setitem(trackers.TRACKERS, "wandb", ("wandb", lambda: False))
    with pytest.raises(LmadaptError, match=r"^report_to=wandb needs `pip install wandb`"):
        _compare([("head", None), ("features", None)], tiny_bert, tasks, tmp_path / "c", report_to="wandb")
    assert not (tmp_path / "c").exists()


def test_the_same_method_on_the_same_model_twice_is_refused(tiny_bert, tasks, tmp_path):
    """`lora` and `lora@<the compare's model>` are one run folder: refused in one line, nothing written."""
    with pytest.raises(LmadaptError, match=r"^--methods lists head on .* twice; list each method once per model$"):
        _compare([("head", None), ("features", None), ("head", str(tiny_bert))], tiny_bert, tasks, tmp_path / "c")
    assert not (tmp_path / "c").exists()
