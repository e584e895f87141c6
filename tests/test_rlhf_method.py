"""`rlhf` as a method of tune/compare: a task of prompts, PPO, score = held-out reward."""

from __future__ import annotations

import json

import pytest

from lmadapt.data import DataSpec, load_train_eval
from lmadapt.errors import LmadaptError
from lmadapt.methods import get_method
from lmadapt.models.load import ModelSpec
from lmadapt.run import evaluate, load_run, tune
from lmadapt.train.config import TrainConfig


@pytest.fixture()
def prompts_task(tmp_path):
    rows = [{"text": f"the movie {w}"} for w in ("was", "is", "plot", "story", "acting", "film", "very", "quite")]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "reward.py").write_text(
        "def reward(prompts, responses):\n"
        "    return [sum(w == 'good' for w in r.split()) / max(1, len(r.split())) for r in responses]\n")
    train, evals = load_train_eval(tmp_path / "p.jsonl", None, DataSpec(kind="prompts"), eval_split=0.25, seed=0)
    return train, evals, f"{tmp_path / 'reward.py'}:reward"


def test_rlhf_runs_through_tune_and_reloads(tiny_llama, prompts_task, tmp_path):
    train, evals, reward = prompts_task
    impl = get_method("rlhf")
    cfg = impl.config_class(rlhf_reward=reward, rlhf_steps=2, rlhf_rollout_batch=4, rlhf_max_new_tokens=6)
    record = tune("rlhf", ModelSpec(model=str(tiny_llama)), train, evals, cfg, TrainConfig(), tmp_path / "run")
    assert record.metric == "heldout_reward" and record.ci_low <= record.score <= record.ci_high
    assert {"kl_after", "reward_before", "kl_before"} <= set(record.extra) and record.extra["kl_before"] == pytest.approx(0, abs=1e-5)
    assert record.train_steps == 2 and 0 < record.trainable_params < record.total_params
    assert (tmp_path / "run" / "artifact" / "adapter" / "adapter_config.json").exists()
    loaded, task, _ = load_run(tmp_path / "run")
    assert task.kind == "prompts"
    with pytest.raises(LmadaptError, match="is Python code, which is never imported from a run folder"):
        evaluate(loaded, evals)  # the run's own file.py:function reward is not imported on load
    loaded.use_reward(reward)  # given explicitly (`lmadapt eval --reward`)
    again = evaluate(loaded, evals)
    assert again.scores["score"] == pytest.approx(record.score, abs=1e-5)


def test_rlhf_needs_prompts_and_a_reward(tiny_llama, toy_data, prompts_task, tmp_path):
    impl = get_method("rlhf")
    train, evals, reward = prompts_task
    with pytest.raises(LmadaptError, match="needs a reward"):
        tune("rlhf", ModelSpec(model=str(tiny_llama)), train, evals, impl.config_class(), TrainConfig(), tmp_path / "a")
    labelled, labelled_eval = load_train_eval(toy_data[0], toy_data[1], DataSpec())
    with pytest.raises(LmadaptError, match="needs a task of prompts"):
        tune("rlhf", ModelSpec(model=str(tiny_llama)), labelled, labelled_eval, impl.config_class(rlhf_reward=reward),
             TrainConfig(), tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
