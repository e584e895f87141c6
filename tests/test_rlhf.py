"""RLHF: PPO math against hand computations, KL = 0 at the reference, PPO raising a rule-based
reward on a tiny Llama, Bradley-Terry and DPO losses by hand, reward-model / DPO / PPO runs end
to end through `run.tune`, and preference-file validation."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lmadapt.data.task import Example, Task
from lmadapt.errors import LmadaptError
from lmadapt.methods.rlhf.config import DPOConfig, PPOConfig, RewardConfig, RlhfMethodConfig
from lmadapt.methods.rlhf.data import join_text, load_preferences, load_prompts, preference_pair
from lmadapt.methods.rlhf.dpo import build_dpo_objective, dpo_loss, dpo_margins
from lmadapt.methods.rlhf.ppo import (
    KLController,
    gae,
    kl_penalty,
    ppo_policy_loss,
    response_mask,
    sample_rollout,
    score_rollout,
    value_loss,
    whiten,
)
from lmadapt.methods.rlhf.ppo_run import (
    evaluate_policy,
    load_policy,
    load_reward_fn,
    run_ppo_loop,
)
from lmadapt.methods.rlhf.reward import bradley_terry_loss, load_reward_model
from lmadapt.models.load import ModelSpec
from lmadapt.run import tune
from lmadapt.train.config import TrainConfig
from tiny import NEGATIVE, POSITIVE, toy_rows, write_jsonl

PROMPTS = ["the movie was", "a film is", "the plot", "acting and story", "very quite", "the story was",
           "a movie", "film plot"]


def good_fraction(prompts: list[str], responses: list[str]) -> list[float]:
    """Rule-based reward: the fraction of generated words that are 'good'."""
    return [sum(w == "good" for w in r.split()) / max(1, len(r.split())) for r in responses]


def toy_pairs(n: int, seed: int) -> list[dict]:
    """Pairs where the chosen sentence carries a positive word and the rejected one a negative word."""
    rng = random.Random(seed)
    rows = []
    for row in toy_rows(2 * n, seed=seed)[::2]:
        words = row["text"].split()
        bad = [rng.choice(NEGATIVE) if w in POSITIVE else w for w in words]
        rows.append({"prompt": "the movie", "chosen": row["text"], "rejected": " ".join(bad)})
    return rows


def pair_task(rows: list[dict], name: str = "pairs") -> Task:
    return Task(name, "preferences", [preference_pair(**r) for r in rows])


def prompt_task(prompts: list[str], name: str = "prompts") -> Task:
    return Task(name, "prompts", [Example(text=p, target="") for p in prompts])


# ---- PPO math -------------------------------------------------------------------------------------

def test_gae_matches_hand_computation():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.5, 2.0, 9.0]])
    values = torch.tensor([[0.5, 0.4, 0.3], [1.0, 0.2, 7.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])  # row 1 ends after two tokens
    advantages, returns = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    # row 0: δ2 = 1 − .3 = .7; δ1 = .9·.3 − .4 = −.13; δ0 = .9·.4 − .5 = −.14; A_t = δ_t + .72 A_{t+1}
    a2 = 0.7
    a1 = -0.13 + 0.72 * a2
    a0 = -0.14 + 0.72 * a1
    # row 1: V after the last real token is 0: δ1 = 2 − .2 = 1.8; δ0 = .5 + .9·.2 − 1 = −.32
    b1 = 1.8
    b0 = -0.32 + 0.72 * b1
    expected = torch.tensor([[a0, a1, a2], [b0, b1, 0.0]])
    torch.testing.assert_close(advantages, expected)
    torch.testing.assert_close(returns, (expected + values) * mask)


def test_clipped_policy_loss_matches_formula():
    old = torch.zeros(1, 4)
    new = torch.log(torch.tensor([[0.5, 0.9, 1.1, 1.5]]))  # ratios
    adv = torch.tensor([[1.0, -1.0, 1.0, -2.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    loss, clip_fraction = ppo_policy_loss(new, old, adv, mask, clip_range=0.2)
    # min(ρA, clip(ρ, .8, 1.2)A): .5 → min(.5, .8) = .5; .9·−1 → min(−.9, −.9) = −.9;
    # 1.1 → 1.1; 1.5·−2 → min(−3, −2.4) = −3; loss = −mean
    assert loss.item() == pytest.approx(-(0.5 - 0.9 + 1.1 - 3.0) / 4)
    assert clip_fraction.item() == 0.0  # the clipped term never wins the min here
    loss, clip_fraction = ppo_policy_loss(new, old, -adv, mask, clip_range=0.2)
    # −A: .5·−1 → min(−.5, −.8) = −.8; .9 → .9; 1.1·−1 → −1.1; 1.5·2 → min(3, 2.4) = 2.4
    assert loss.item() == pytest.approx(-(-0.8 + 0.9 - 1.1 + 2.4) / 4)
    assert clip_fraction.item() == pytest.approx(0.5)


def test_value_loss_and_whiten_by_hand():
    values, old = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]])
    returns, mask = torch.tensor([[0.0, 1.0]]), torch.ones(1, 2)
    # token 0: max((1−0)², (.2−0)²) = 1; token 1: max((0−1)², (0−1)²) = 1 → ½·mean = .5
    assert value_loss(values, old, returns, mask, 0.2).item() == pytest.approx(0.5)
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    m = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    w = whiten(x, m)
    assert (w[0, :3].mean().item(), (w[0, :3] ** 2).mean().item()) == pytest.approx((0.0, 1.0), abs=1e-5)
    scaled = whiten(x, m, shift_mean=False)
    assert scaled[0, :3].mean().item() == pytest.approx(2.0, abs=1e-5)


def test_response_mask_and_adaptive_kl():
    eos = 9
    mask = response_mask(torch.tensor([[1, 9, 9, 9], [1, 2, 3, 4], [9, 0, 0, 0]]), [eos])
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    fixed = KLController(0.1)
    fixed.update(5.0, 8)
    assert fixed.beta == 0.1
    adaptive = KLController(0.1, target=1.0, horizon=80)
    adaptive.update(5.0, 8)  # error clipped to +0.2 → β(1 + .2·8/80)
    assert adaptive.beta == pytest.approx(0.1 * 1.02)
    assert kl_penalty(torch.tensor([0.5]), torch.tensor([0.5])).item() == 0.0


@pytest.mark.parametrize("adapter", ["lora", "full"])
def test_kl_is_zero_when_policy_is_reference(tiny_llama, adapter):
    cfg = PPOConfig(rollout_batch=4, minibatch=2, max_new_tokens=5, adapter=adapter)
    policy, tokenizer, _ = load_policy(ModelSpec(model=str(tiny_llama), device="cpu"), cfg)
    roll = sample_rollout(policy, tokenizer, PROMPTS[:4], cfg, seed=0)
    stats = score_rollout(policy, roll, torch.ones(4), KLController(0.5), cfg)
    assert stats["kl"] == pytest.approx(0.0, abs=1e-6)
    torch.testing.assert_close(roll.old_logps, roll.ref_logps)


def test_ppo_raises_rule_based_reward(tiny_llama, tmp_path):
    cfg = PPOConfig(steps=15, rollout_batch=8, minibatch=4, ppo_epochs=2, lr=3e-3, max_new_tokens=6,
                    adapter="full", kl_coef=0.05, eval_samples=2)
    policy, tokenizer, _ = load_policy(ModelSpec(model=str(tiny_llama), device="cpu"), cfg)
    before = evaluate_policy(policy, tokenizer, PROMPTS, good_fraction, cfg)
    log = run_ppo_loop(policy, tokenizer, PROMPTS, good_fraction, cfg, tmp_path / "log.jsonl", False)
    after = evaluate_policy(policy, tokenizer, PROMPTS, good_fraction, cfg)
    assert after["rewards"].mean() > before["rewards"].mean() + 0.1
    assert after["kl"].mean() > 0
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert len(rows) == 15 and rows == log
    assert {"reward", "kl", "entropy", "clip_fraction", "value_loss", "policy_loss", "beta"} <= set(rows[0])


def test_lora_ppo_keeps_reference_and_writes_run(tiny_llama, tmp_path):
    reward_file = tmp_path / "rule.py"
    reward_file.write_text("def reward(prompts, responses):\n"
                           "    return [float(r.split().count('good')) for r in responses]\n")
    cfg = PPOConfig(steps=2, rollout_batch=4, minibatch=2, ppo_epochs=1, lr=1e-2, max_new_tokens=4, lora_r=2)
    record = tune("rlhf", ModelSpec(model=str(tiny_llama), device="cpu"), prompt_task(PROMPTS), prompt_task(PROMPTS[:4]),
                  RlhfMethodConfig.from_ppo(cfg, f"{reward_file}:reward"), TrainConfig(seed=cfg.seed), tmp_path / "ppo")
    run = tmp_path / "ppo"
    assert (run / "artifact" / "adapter" / "adapter_config.json").exists()
    assert (run / "artifact" / "value_head.safetensors").exists()
    assert len((run / "ppo_log.jsonl").read_text().splitlines()) == 2
    saved = json.loads((run / "record.json").read_text())
    assert saved["metric"] == "heldout_reward" and saved["score"] == pytest.approx(record.score)
    assert saved["extra"]["kl_before"] == pytest.approx(0.0, abs=1e-6)
    assert 0 < record.trainable_params < record.total_params
    with pytest.raises(LmadaptError, match="module:function"):
        load_reward_fn(str(tmp_path / "nothing-here"))


# ---- reward model ---------------------------------------------------------------------------------

def test_bradley_terry_loss_by_hand():
    loss = bradley_terry_loss(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0]))
    expected = (math.log(1 + math.exp(-1.0)) + math.log(1 + math.exp(2.0))) / 2
    assert loss.item() == pytest.approx(expected)


@pytest.mark.parametrize(("backbone", "adapter"), [("tiny_bert", "full"), ("tiny_llama", "lora")])
def test_reward_model_learns_preferences(request, backbone, adapter, tmp_path):
    model_dir = request.getfixturevalue(backbone)
    train_pairs = pair_task(toy_pairs(64, seed=1))
    eval_pairs = pair_task(toy_pairs(24, seed=2))
    train_cfg = TrainConfig(epochs=3, batch_size=8, lr=3e-3, warmup_ratio=0.0, max_length=32)
    record = tune("reward", ModelSpec(model=str(model_dir), device="cpu"), train_pairs, eval_pairs,
                  RewardConfig(reward_adapter=adapter, reward_lora_r=4), train_cfg, tmp_path / "rm")
    assert record.metric == "pairwise_accuracy" and record.score >= 0.8
    assert record.ci_low <= record.score <= record.ci_high
    scorer = load_reward_model(tmp_path / "rm", device="cpu")
    good = scorer(["the movie"], ["the plot was good"])
    bad = scorer(["the movie"], ["the plot was awful"])
    assert good.item() > bad.item()
    assert json.loads((tmp_path / "rm" / "record.json").read_text())["score"] == pytest.approx(record.score)


# ---- DPO ------------------------------------------------------------------------------------------

def test_dpo_loss_by_hand():
    loss, margin = dpo_loss(torch.tensor([-1.0, -2.0]), torch.tensor([-3.0, -1.0]),
                            torch.tensor([-2.0, -2.0]), torch.tensor([-2.0, -2.0]), beta=0.5)
    # margins: .5·((−1+2) − (−3+2)) = 1;  .5·((−2+2) − (−1+2)) = −.5
    torch.testing.assert_close(margin, torch.tensor([1.0, -0.5]))
    expected = (math.log(1 + math.exp(-1.0)) + math.log(1 + math.exp(0.5))) / 2
    assert loss.item() == pytest.approx(expected)


def test_dpo_reference_is_adapter_off_and_training_helps(tiny_llama, tmp_path):
    train_pairs = pair_task(toy_pairs(32, seed=1))
    eval_pairs = pair_task(toy_pairs(16, seed=2))
    objective, _ = build_dpo_objective(ModelSpec(model=str(tiny_llama), device="cpu"), DPOConfig(), 32)
    assert np.allclose(dpo_margins(objective, eval_pairs.examples), 0.0, atol=1e-5)  # LoRA B = 0: policy = reference
    train_cfg = TrainConfig(epochs=3, batch_size=8, lr=2e-2, warmup_ratio=0.0, max_length=32)
    record = tune("dpo", ModelSpec(model=str(tiny_llama), device="cpu"), train_pairs, eval_pairs,
                  DPOConfig(beta=0.5, dpo_lora_r=4), train_cfg, tmp_path / "dpo")
    assert record.extra["margin_after"] > record.extra["margin_before"]
    assert record.score >= 0.75
    assert (tmp_path / "dpo" / "artifact" / "adapter" / "adapter_model.safetensors").exists()


# ---- data and CLI ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("content", "message"), [
    ('{"prompt": "p", "chosen": "a"}\n', r"pairs\.jsonl:1: missing field 'rejected'"),
    ('{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "p", "chosen": " ", "rejected": "b"}\n',
     r"pairs\.jsonl:2: field 'chosen' is empty"),
    ('{"prompt": "p", "chosen": "a", "rejected": "a"}\n', r"pairs\.jsonl:1: 'chosen' and 'rejected' are the same"),
    ('{"prompt": 3, "chosen": "a", "rejected": "b"}\n', r"pairs\.jsonl:1: field 'prompt' must be a string"),
    ("not json\n", r"pairs\.jsonl:1: not valid JSON"),
    ("\n", r"no preference pairs; the file is empty"),
])
def test_preference_file_errors(tmp_path, content, message):
    path = tmp_path / "pairs.jsonl"
    path.write_text(content)
    with pytest.raises(LmadaptError, match=message):
        load_preferences(path)


def test_prompt_files_and_join(tmp_path):
    (tmp_path / "p.txt").write_text("one\n\ntwo\n")
    assert load_prompts(tmp_path / "p.txt") == ["one", "two"]
    write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a"}, {"text": "b"}])
    assert load_prompts(tmp_path / "p.jsonl") == ["a", "b"]
    assert join_text("Review:", "great") == "Review: great"
    assert join_text("Review:", " great") == "Review: great"
    with pytest.raises(LmadaptError, match="steps must be"):
        PPOConfig(steps=0)


def test_cli_reward_and_one_line_error(tiny_bert, tmp_path):
    from lmadapt.cli import app

    train = write_jsonl(tmp_path / "train.jsonl", toy_pairs(16, seed=1))
    runner = CliRunner()
    result = runner.invoke(app, ["rlhf", "reward", "--model", str(tiny_bert), "--train", str(train),
                                 "--out", str(tmp_path / "rm"), "--device", "cpu", "epochs=1", "batch_size=4"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "rm" / "record.json").exists()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "chosen": "a"}\n')
    result = runner.invoke(app, ["rlhf", "dpo", "--model", str(tiny_bert), "--train", str(bad)])
    assert isinstance(result.exception, LmadaptError) and "bad.jsonl:1" in str(result.exception)
    assert not (tmp_path / "runs").exists()
