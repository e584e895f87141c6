"""Divergence is not success: exploding or non-finite runs stop with one line and leave no run folder."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from lmadapt.errors import LmadaptError
from lmadapt.train.guard import DivergenceGuard, fix_hint, weight_rms
from tiny import POSITIVE, toy_rows, write_jsonl

PROGRESS = re.compile(r"\d+/\d+ \[|it/s|step/s")  # tqdm bars share stderr with the error line


def _cli(run_cli, args: list[str]) -> tuple[int, list[str]]:
    """(exit code, stderr lines that are not progress bars) of an in-process `lmadapt` run."""
    code, err = run_cli(args)
    assert "Traceback" not in err, err
    return code, [line for line in err.splitlines() if line.strip() and not PROGRESS.search(line)]


def _assert_diverged(code: int, lines: list[str], out: Path, fix: str) -> None:
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("error: ") and "diverged at step" in lines[0], lines
    assert fix in lines[0], lines
    assert not out.exists() and not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


# ---- the guard on its own ----------------------------------------------------------------------

def test_guard_stops_a_loss_that_stays_far_above_its_start():
    guard = DivergenceGuard("lower lr (now 1)", warmup=3, patience=4)
    for step, loss in enumerate([0.7, 0.69, 0.71], start=1):
        guard.update(step, loss, 1.0)
    assert guard.loss_limit() == pytest.approx(0.69 + 1.38)
    guard.update(4, 50.0, 1.0)  # one spike, then back: fine
    guard.update(5, 0.6, 1.0)
    for step in (6, 7, 8):
        guard.update(step, 80.0, 1.0)
    with pytest.raises(LmadaptError, match=r"^training diverged at step 9: the loss \(90\) stayed above 2\.07 "
                                           r"\(its start was 0\.69\) for 4 steps; lower lr \(now 1\)$"):
        guard.update(9, 90.0, 1.0)


def test_guard_baseline_ignores_a_blow_up_inside_the_first_steps():
    """The bar is set by the lowest of the first steps, so exploding on step 2 cannot raise it."""
    guard = DivergenceGuard(patience=2)
    for step, loss in enumerate([0.7, 4800.0, 23000.0, 16000.0], start=1):
        guard.update(step, loss)
    with pytest.raises(LmadaptError, match="at step 5: the loss"):
        guard.update(5, 3800.0)


def test_guard_margin_keeps_near_zero_and_negative_starts_quiet():
    guard = DivergenceGuard(patience=3, what="policy loss", label="PPO")
    for step, loss in enumerate([0.001, -0.02, 0.003, 0.5, 0.8, -0.3, 0.9, 0.7, 0.95], start=1):
        guard.update(step, loss)  # 3x a ~0 start is noise; the 1.0 margin is what counts
    for step in (10, 11):
        guard.update(step, 5.0)
    with pytest.raises(LmadaptError, match="^PPO diverged at step 12: the policy loss"):
        guard.update(12, 5.0)


def test_guard_tiny_runs_only_get_the_immediate_checks():
    guard = DivergenceGuard()
    for step, loss in enumerate([0.7, 3.0, 9.0, 12.0, 30.0, 40.0, 50.0], start=1):
        guard.update(step, loss, 1.0)  # 7 steps < warmup 3 + patience 5: never "stays high"
    with pytest.raises(LmadaptError, match="at step 8: the loss became nan"):
        guard.update(8, math.nan, 1.0)


@pytest.mark.parametrize("loss, grad, message", [
    (math.inf, 1.0, "the loss became inf"),
    (0.7, math.nan, "the gradient norm became nan"),
    (0.7, math.inf, "the gradient norm became inf"),
])
def test_guard_non_finite_loss_or_gradient(loss, grad, message):
    with pytest.raises(LmadaptError, match=f"diverged at step 1: {message}"):
        DivergenceGuard().update(1, loss, grad)


def test_guard_gradient_norm_that_stays_exploded():
    guard = DivergenceGuard(patience=2)
    for step in (1, 2, 3):
        guard.update(step, 0.7, 2.0)
    guard.update(4, 0.7, 3e4)
    with pytest.raises(LmadaptError, match=r"at step 5: the gradient norm \(5e\+04\) stayed above 2e\+04"):
        guard.update(5, 0.7, 5e4)


def test_guard_weights_non_finite_or_exploded():
    weights = [torch.full((4, 4), 0.02), torch.ones(3)]
    guard = DivergenceGuard(fix_hint(1e3, 0.0))
    guard.watch(weights)
    guard.check_weights(1, [w * 500 for w in weights])  # below 1000x max(start, 1)
    with pytest.raises(LmadaptError, match=r"at step 2: the trainable weights exploded .*; lower lr \(now 1000\) "
                                           r"and turn gradient clipping on \(max_grad_norm=1\.0\)$"):
        guard.check_weights(2, [w * 5000 for w in weights])
    with pytest.raises(LmadaptError, match="at step 3: the trainable weights became non-finite"):
        guard.check_weights(3, [weights[0], torch.tensor([math.nan])])
    assert weight_rms([torch.ones(3), 2 * torch.ones(2, 2)]) == pytest.approx(math.sqrt(19 / 7))


def test_fix_hint_names_the_settings():
    assert fix_hint(0.5, 1.0) == "lower lr (now 0.5)"
    assert fix_hint(1e3, 0, "rlhf_lr") == "lower rlhf_lr (now 1000) and turn gradient clipping on (max_grad_norm=1.0)"


# ---- whole runs from the command line ----------------------------------------------------------

@pytest.mark.parametrize("method, settings, fix", [
    ("head", ["lr=1e3"], "lower lr (now 1000)"),
    ("head", ["lr=1e30"], "lower lr (now 1e+30)"),
    ("head", ["lr=1e3", "max_grad_norm=0"], "turn gradient clipping on (max_grad_norm=1.0)"),
    ("full", ["lr=1e3"], "lower lr (now 1000)"),  # the loss sits at chance; the weights explode
])
def test_tune_diverging_run_is_an_error(method, settings, fix, tiny_bert, toy_data, tmp_path, run_cli):
    out = tmp_path / "run"
    code, lines = _cli(run_cli, [
        "tune", "--method", method, "--model", str(tiny_bert), "--train", str(toy_data[0]),
        "--eval", str(toy_data[1]), "--out", str(out), "--device", "cpu", "epochs=1", "batch_size=8", *settings])
    _assert_diverged(code, lines, out, fix)


def test_tune_normal_run_still_succeeds(tiny_bert, toy_data, tmp_path, run_cli):
    out = tmp_path / "run"
    code, lines = _cli(run_cli, [
        "tune", "--method", "head", "--model", str(tiny_bert), "--train", str(toy_data[0]),
        "--eval", str(toy_data[1]), "--out", str(out), "--device", "cpu", "epochs=2", "batch_size=8", "lr=1e-2"])
    assert code == 0 and (out / "record.json").exists(), lines


@pytest.mark.parametrize("settings, fix", [
    (["lr=1e3"], "lower lr (now 1000)"),
    (["lr=1e30"], "lower lr (now 1e+30)"),
    (["lr=1e3", "max_grad_norm=0"], "turn gradient clipping on (max_grad_norm=1.0)"),
])
def test_ppo_diverging_run_is_an_error(settings, fix, tiny_llama, tmp_path, run_cli):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the movie was\na film is\nthe plot\nacting and story\n")
    reward = tmp_path / "rule.py"
    reward.write_text("def reward(prompts, responses):\n    return [float(r.split().count('good')) for r in responses]\n")
    out = tmp_path / "ppo"
    code, lines = _cli(run_cli, [
        "rlhf", "ppo", "--model", str(tiny_llama), "--prompts", str(prompts), "--reward", f"{reward}:reward",
        "--out", str(out), "--device", "cpu", "--quiet", "steps=3", "rollout_batch=4", "minibatch=2",
        "max_new_tokens=4", *settings])
    _assert_diverged(code, lines, out, fix)
    assert lines[0].startswith("error: PPO diverged at step")


def test_dpo_diverging_run_is_an_error(tiny_llama, tmp_path, run_cli):
    rows = [{"prompt": "the movie", "chosen": r["text"],
             "rejected": " ".join("bad" if w in POSITIVE else w for w in r["text"].split())}
            for r in toy_rows(32, seed=3) if r["label"] == "positive"]
    train = write_jsonl(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "dpo"
    code, lines = _cli(run_cli, [
        "rlhf", "dpo", "--model", str(tiny_llama), "--train", str(train), "--out", str(out), "--device", "cpu",
        "epochs=1", "batch_size=4", "lr=1e3"])
    _assert_diverged(code, lines, out, "lower lr (now 1000)")
