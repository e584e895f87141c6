"""reward, dpo and rlhf (PPO) as methods like any other: through `run.tune` into the common run
folder, reloaded by `load_run`, scored by `lmadapt eval` on a pair file, ranked by `compare`,
`predict`ing, and a PPO run whose reward is a `reward` run folder."""

from __future__ import annotations

import json
import random

import pytest
from typer.testing import CliRunner

from lmadapt.data import DataSpec, load_task, load_train_eval, split_task
from lmadapt.errors import LmadaptError
from lmadapt.methods import get_method, task_readers
from lmadapt.methods.rlhf.config import DPOConfig, RewardConfig, RlhfMethodConfig
from lmadapt.models.load import ModelSpec
from lmadapt.run import evaluate, load_run, tune
from lmadapt.train.config import TrainConfig
from tiny import NEGATIVE, POSITIVE, toy_rows, write_jsonl

RUN_FILES = ("lmadapt.json", "record.json", "predictions.jsonl", "train_log.jsonl", "runs.sqlite", "artifact")


def pair_rows(n: int, seed: int) -> list[dict]:
    """Chosen: a sentence with a positive word; rejected: the same with a negative word."""
    rng = random.Random(seed)
    rows = []
    for row in toy_rows(2 * n, seed=seed)[::2]:
        bad = [rng.choice(NEGATIVE) if w in POSITIVE else w for w in row["text"].split()]
        rows.append({"prompt": "the movie", "chosen": row["text"], "rejected": " ".join(bad)})
    return rows


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pairs")
    return write_jsonl(folder / "train.jsonl", pair_rows(48, seed=1)), write_jsonl(folder / "eval.jsonl", pair_rows(16, seed=2))


@pytest.fixture(scope="module")
def runs(tiny_bert, tiny_llama, pairs, tmp_path_factory):
    """A reward run (tiny BERT, full) and a DPO run (tiny Llama, LoRA) made by run.tune."""
    folder = tmp_path_factory.mktemp("runs")
    spec = DataSpec()  # kind auto: the preference reader recognises the chosen/rejected rows
    train, evals = load_train_eval(pairs[0], pairs[1], spec, readers=task_readers(["reward", "dpo"]))
    cfg = TrainConfig(epochs=3, batch_size=8, lr=3e-3, warmup_ratio=0.0, max_length=32, max_new_tokens=4)
    reward = tune("reward", ModelSpec(model=str(tiny_bert), device="cpu"), train, evals, RewardConfig(), cfg,
                  folder / "reward")
    dpo = tune("dpo", ModelSpec(model=str(tiny_llama), device="cpu"), train, evals, DPOConfig(beta=0.5, dpo_lora_r=4),
               TrainConfig(epochs=3, batch_size=8, lr=2e-2, warmup_ratio=0.0, max_length=32, max_new_tokens=4),
               folder / "dpo")
    return {"reward": (folder / "reward", reward), "dpo": (folder / "dpo", dpo)}


def test_preference_files_load_as_a_task_and_split_by_pair(pairs, toy_data):
    readers = task_readers(["reward"])
    task = load_task(pairs[0], DataSpec(), readers=readers)
    assert task.kind == "preferences" and len(task.examples) == 48
    first = task.examples[0]
    assert (first.text, first.prompt, first.chosen, first.target) == ("the movie", "the movie", first.target, first.target)
    assert first.rejected and first.rejected != first.chosen
    train, evals = split_task(task, 0.25, seed=3)  # every pair shares its prompt: the pair is the unit
    assert len(evals.examples) == 12 and len(train.examples) == 36
    assert split_task(task, 0.25, seed=3)[1].examples == evals.examples
    assert not {ex.key for ex in train.examples} & {ex.key for ex in evals.examples}
    assert load_task(toy_data[0], DataSpec(), readers=readers).kind == "classification"  # not pairs: generic
    assert get_method("reward").load_task is get_method("dpo").load_task and len(task_readers(["reward", "dpo"])) == 1


@pytest.mark.parametrize("method, metric", [("reward", "pairwise_accuracy"), ("dpo", "implicit_reward_accuracy")])
def test_tune_writes_the_common_run_folder_and_load_run_scores_it(runs, pairs, method, metric):
    run, record = runs[method]
    assert all((run / name).exists() for name in RUN_FILES)
    manifest = json.loads((run / "lmadapt.json").read_text())
    assert manifest["method"] == method and manifest["task"]["kind"] == "preferences"
    saved = json.loads((run / "record.json").read_text())
    assert saved["method"] == method and saved["metric"] == metric == record.metric
    assert record.score >= 0.75 and record.ci_low <= record.score <= record.ci_high
    assert record.train_steps > 0 and record.eval_examples == 16 and record.final_loss is not None
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 16 and sum(r["prediction"] == r["target"] for r in rows) / 16 == pytest.approx(record.score)
    adapted, task, _ = load_run(run, "cpu")
    assert task.kind == "preferences"
    evals = load_task(pairs[1], DataSpec(kind="preferences"), readers=task_readers([method]))
    assert evaluate(adapted, evals).scores["score"] == pytest.approx(record.score)
    from lmadapt.cli import app

    result = CliRunner().invoke(app, ["eval", str(run), "--data", str(pairs[1]), "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output.strip().splitlines()[-1])
    assert scores["metric"] == metric and scores["method"] == method and scores["examples"] == 16
    assert scores["score"] == pytest.approx(record.score)


def test_dpo_record_keeps_its_before_and_after_figures(runs):
    extra = runs["dpo"][1].extra
    assert extra["accuracy_before"] == 0.0 and extra["margin_before"] == pytest.approx(0.0, abs=1e-5)
    assert extra["margin_after"] > extra["margin_before"] and "eval_loss_after" in extra
    assert "reward_margin" in runs["reward"][1].extra and runs["reward"][1].extra["model_kind"] == "encoder"


def test_predict_on_reward_and_dpo_runs(runs):
    from lmadapt.cli import app

    runner = CliRunner()
    for method in ("reward", "dpo"):
        result = runner.invoke(app, ["predict", str(runs[method][0]), "--text", "the movie", "--text", "the plot was",
                                     "--device", "cpu"])
        assert result.exit_code == 0, result.output
        lines = [json.loads(line) for line in result.output.strip().splitlines()]
        assert [line["text"] for line in lines] == ["the movie", "the plot was"]
        if method == "reward":  # the reward of each input, as text
            assert all(isinstance(float(line["prediction"]), float) for line in lines)
        else:  # a generated response
            assert all(isinstance(line["prediction"], str) for line in lines)
    reward, _, _ = load_run(runs["reward"][0], "cpu")
    good, bad = map(float, reward.predict(["the movie the plot was good", "the movie the plot was awful"]))
    assert good > bad


def test_eval_of_a_pair_run_on_other_data_is_one_line(runs, toy_data, run_cli):
    code, err = run_cli(["eval", runs["reward"][0], "--data", toy_data[1], "--device", "cpu"])
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert "missing field 'prompt'" in lines[0] and "preference rows need prompt, chosen, rejected" in lines[0]


def test_compare_ranks_reward_and_dpo_on_a_preference_file(tiny_llama, pairs, tmp_path, run_cli):
    out = tmp_path / "cmp"
    code, err = run_cli(["compare", "--methods", "reward,dpo", "--model", tiny_llama, "--train", pairs[0],
                         "--eval", pairs[1], "--out", out, "--device", "cpu", "epochs=1", "batch_size=8",
                         "max_length=32", "reward_adapter=lora", "reward_lora_r=2"])
    assert code == 0, err
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {r["method"]: r["metric"] for r in rows} == {"reward": "pairwise_accuracy", "dpo": "implicit_reward_accuracy"}
    assert all(0.0 <= r["ci_low"] <= r["score"] <= r["ci_high"] <= 1.0 for r in rows)
    assert (out / "report.md").is_file() and (out / "runs" / "reward" / "record.json").is_file()
    assert (out / "runs" / "dpo" / "artifact" / "adapter").is_dir()


def test_ppo_with_a_reward_run_folder_as_its_reward(runs, tiny_llama, tmp_path):
    from lmadapt.methods.rlhf.reward import RewardScorer

    reward_run = runs["reward"][0]
    prompts = [{"text": t} for t in ("the movie was", "a film is", "the plot", "acting and story", "the story was",
                                     "a movie", "film plot", "very quite")]
    data = write_jsonl(tmp_path / "prompts.jsonl", prompts)
    train, evals = load_train_eval(data, None, DataSpec(kind="prompts"), eval_split=0.25, seed=0)
    cfg = RlhfMethodConfig(rlhf_reward=str(reward_run), rlhf_steps=2, rlhf_rollout_batch=4, rlhf_max_new_tokens=4)
    record = tune("rlhf", ModelSpec(model=str(tiny_llama), device="cpu"), train, evals, cfg, TrainConfig(),
                  tmp_path / "ppo")
    assert record.metric == "heldout_reward" and record.ci_low <= record.score <= record.ci_high
    assert {"reward_before", "kl_before", "kl_after", "final_beta"} <= set(record.extra)
    samples = [json.loads(line) for line in (tmp_path / "ppo" / "samples.jsonl").read_text().splitlines()]
    assert [s["stage"] for s in samples] == ["before"] * 2 + ["after"] * 2 and all("reward" in s for s in samples)
    assert sum(s["reward"] for s in samples[2:]) / 2 == pytest.approx(record.score)
    loaded, _, manifest = load_run(tmp_path / "ppo", "cpu")
    assert manifest["method_config"]["rlhf_reward"] == str(reward_run)
    assert loaded.reward_fn is None  # not loaded with the policy
    again = evaluate(loaded, evals)  # the reward run folder loads on first use, by the reward method
    assert again.scores["score"] == pytest.approx(record.score, abs=1e-4)
    assert isinstance(loaded.reward_fn, RewardScorer)
    assert len(loaded.predict(["the movie was"])) == 1  # the policy generates without a reward


def test_old_rlhf_reward_folder_as_reward_is_one_line(tiny_llama, tmp_path):
    old = tmp_path / "old-reward"
    old.mkdir()
    (old / "lmadapt.json").write_text(json.dumps({"format": 1, "method": "rlhf-reward", "artifact": "model"}))
    from lmadapt.methods.rlhf.reward import load_reward_model

    with pytest.raises(LmadaptError, match=r"holds an `lmadapt rlhf reward` run from an older lmadapt; re-run"):
        load_reward_model(old)
    head = tmp_path / "not-reward"
    head.mkdir()
    (head / "lmadapt.json").write_text(json.dumps({"format": 1, "method": "head"}))
    with pytest.raises(LmadaptError, match="holds a 'head' run, not a reward model"):
        load_reward_model(head)


def test_rlhf_aliases_write_common_run_folders(runs, pairs, tiny_llama, tmp_path, run_cli):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the movie was\na film is\nthe plot\nacting and story\nthe story was\n")
    code, err = run_cli(["rlhf", "ppo", "--model", tiny_llama, "--prompts", prompts, "--reward", runs["reward"][0],
                         "--out", tmp_path / "ppo", "--device", "cpu", "--quiet", "steps=1", "rollout_batch=4",
                         "minibatch=2", "max_new_tokens=4"])
    assert code == 0, err
    code, err = run_cli(["rlhf", "dpo", "--model", tiny_llama, "--train", pairs[0], "--eval", pairs[1],
                         "--out", tmp_path / "dpo", "--device", "cpu", "epochs=1", "batch_size=8", "max_length=32"])
    assert code == 0, err
    for name, method in (("ppo", "rlhf"), ("dpo", "dpo")):
        assert all((tmp_path / name / f).exists() for f in RUN_FILES if f != "train_log.jsonl")
        _, _, manifest = load_run(tmp_path / name, "cpu")
        assert manifest["method"] == method
    assert json.loads((tmp_path / "ppo" / "lmadapt.json").read_text())["method_config"]["rlhf_minibatch"] == 2
    write_jsonl(tmp_path / "p.jsonl", [{"text": "the movie was"}, {"text": "a film is"}])
    code, err = run_cli(["eval", tmp_path / "ppo", "--data", tmp_path / "p.jsonl", "--device", "cpu"])
    assert code == 0, err  # its reward is a run folder: loaded, no --reward needed
