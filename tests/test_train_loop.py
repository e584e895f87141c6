"""The shared training loop: accumulation invariance, exact resume, NaN guard, 2-process DDP."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from lmadapt.data import DataSpec, load_task
from lmadapt.errors import LmadaptError
from lmadapt.methods.base import RunContext, task_model_for
from lmadapt.models.load import ModelSpec
from lmadapt.train.checkpoint import latest_checkpoint
from lmadapt.train.config import TrainConfig
from lmadapt.train.loop import train
from tiny import make_bert, toy_rows, write_jsonl


@pytest.fixture(scope="module")
def bert_no_dropout(tmp_path_factory) -> Path:
    return make_bert(tmp_path_factory.mktemp("bert_nodrop"), dropout=0.0)


@pytest.fixture(scope="module")
def task(toy_data):
    return load_task(toy_data[0], DataSpec())


def _run(model_dir: Path, task, cfg: TrainConfig, out: Path | None = None, stop: int | None = None):
    tm = task_model_for(task, RunContext(ModelSpec(model=str(model_dir), device="cpu"), cfg, out or Path(".")))
    return tm, train(tm, task.examples, cfg, out, stop_at_step=stop)


def test_accumulation_invariance(bert_no_dropout, task):
    """Batch 8 in one step equals batch 8 as 4 accumulated micro-batches of 2 (TRL's invariance test)."""
    base = dict(epochs=1, batch_size=8, lr=1e-3, warmup_ratio=0.0, eval_each_epoch=False)
    _, one = _run(bert_no_dropout, task, TrainConfig(**base, grad_accum=1))
    _, four = _run(bert_no_dropout, task, TrainConfig(**base, grad_accum=4))
    assert len(one.losses) == len(four.losses) == 8
    assert one.losses == pytest.approx(four.losses, abs=1e-5)


def test_loss_decreases(tiny_bert, task):
    _, result = _run(tiny_bert, task, TrainConfig(epochs=4, batch_size=8, lr=3e-3, eval_each_epoch=False))
    first, last = sum(result.losses[:4]) / 4, sum(result.losses[-4:]) / 4
    assert last < first


def test_exact_resume(tiny_bert, task, tmp_path):
    """Stopping after a checkpoint and resuming reproduces the uninterrupted run exactly (dropout on)."""
    cfg = TrainConfig(epochs=2, batch_size=8, lr=1e-3, save_every=3, eval_each_epoch=False)
    tm_full, full = _run(tiny_bert, task, cfg, tmp_path / "a")
    _run(tiny_bert, task, cfg, tmp_path / "b", stop=7)  # "crash" after step 7; newest checkpoint: 6
    assert latest_checkpoint(tmp_path / "b" / "checkpoints").name == "step-6"
    resumed_cfg = TrainConfig(**{**cfg.__dict__, "resume": True})
    tm_res, resumed = _run(tiny_bert, task, resumed_cfg, tmp_path / "b")
    assert resumed.losses == pytest.approx(full.losses, abs=1e-6)
    for (name, a), (_, b) in zip(tm_full.model.named_parameters(), tm_res.model.named_parameters(), strict=True):
        torch.testing.assert_close(a, b, msg=name)


def test_lr_overrides_move_only_their_parameters_faster(bert_no_dropout, task):
    """Per-parameter lr: with body lr 0 only the overridden (head) parameters change, and a
    run without overrides at body lr 0 changes nothing."""
    cfg = TrainConfig(epochs=1, batch_size=8, lr=1e-9, warmup_ratio=0.0, eval_each_epoch=False,
                      max_grad_norm=0.0)
    tm = task_model_for(task, RunContext(ModelSpec(model=str(bert_no_dropout)), cfg, Path(".")))
    before = {n: p.detach().clone() for n, p in tm.model.named_parameters()}
    head = {id(p) for n, p in tm.model.named_parameters() if n.startswith("classifier")}
    train(tm, task.examples, cfg, lr_overrides={i: 1e-2 for i in head})
    moved = {n for n, p in tm.model.named_parameters() if (p - before[n]).abs().max() > 1e-6}
    assert moved == {n for n in before if n.startswith("classifier")}


def test_nan_guard(tiny_bert, task):
    tm = task_model_for(task, RunContext(ModelSpec(model=str(tiny_bert)), TrainConfig(), Path(".")))
    tm.loss = lambda model, batch: model(**batch).loss * float("nan")
    with pytest.raises(LmadaptError, match="diverged at step 1: the loss became nan"):
        train(tm, task.examples, TrainConfig(epochs=1, batch_size=8, eval_each_epoch=False))


def test_batch_larger_than_data(tiny_bert, task):
    with pytest.raises(LmadaptError, match="lower batch_size"):
        _run(tiny_bert, task.with_examples(task.examples[:4]), TrainConfig(batch_size=8))


@pytest.mark.skipif(shutil.which("accelerate") is None and not Path(sys.executable).with_name("accelerate").exists(),
                    reason="accelerate CLI not installed")
def test_two_process_ddp_matches_one(bert_no_dropout, tmp_path):
    """accelerate launch, 2 CPU processes (torchrun + gloo): same global batch ⇒ same loss curve.

    accelerate 1.x starts several CPU processes through its torchrun path (`--multi_gpu`, which
    needs no GPU: our Accelerator runs on CPU when CUDA is absent); its `--cpu` flag alone uses the
    single-process launcher unless MPI is installed.
    """
    data = write_jsonl(tmp_path / "train.jsonl", toy_rows(32, seed=3))
    script = Path(__file__).with_name("ddp_train.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
    single = subprocess.run([sys.executable, str(script), str(bert_no_dropout), str(data), str(tmp_path / "one.json")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    launcher = str(Path(sys.executable).with_name("accelerate"))
    double = subprocess.run([launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                             "--mixed_precision", "no", "--dynamo_backend", "no", str(script),
                             str(bert_no_dropout), str(data), str(tmp_path / "two.json")],
                            env=env, capture_output=True, text=True, timeout=600)
    assert double.returncode == 0, double.stderr[-3000:]
    one = json.loads((tmp_path / "one.json").read_text())
    two = json.loads((tmp_path / "two.json").read_text())
    assert one["processes"] == 1 and two["processes"] == 2
    assert two["losses"] == pytest.approx(one["losses"], abs=1e-4)


def test_group_by_length_batches_similar_lengths_and_keeps_every_example():
    from lmadapt.data.task import Example
    from lmadapt.train.loop import epoch_order

    examples = [Example(text="w " * (i * 7 % 23 + 1), target="x") for i in range(50)]
    cfg = TrainConfig(batch_size=5, seed=3)
    plain = epoch_order(examples, 0, cfg)
    grouped = epoch_order(examples, 0, replace(cfg, group_by_length=True))
    assert sorted(grouped.tolist()) == list(range(50)) and grouped.tolist() != plain.tolist()
    assert torch.equal(grouped, epoch_order(examples, 0, replace(cfg, group_by_length=True)))  # seeded

    def padding(order):
        lengths = [len(examples[i].text) for i in order.tolist()]
        return sum(max(b) * len(b) - sum(b) for b in (lengths[i:i + 5] for i in range(0, 50, 5)))
    assert padding(grouped) < padding(plain) / 3
    assert not torch.equal(grouped, epoch_order(examples, 1, replace(cfg, group_by_length=True)))


def test_adamw_is_fused_on_plain_parameters_and_steps_like_the_per_tensor_loop():
    """The loop's AdamW takes torch's fused kernel for plain CPU parameters (not under an engine
    that swaps them, FSDP / DeepSpeed) and moves the weights as the default per-tensor loop does."""
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from lmadapt.train.loop import adamw

    torch.manual_seed(0)
    weights = [torch.randn(7, 5), torch.randn(5)]
    grads = [[torch.randn_like(w) for w in weights] for _ in range(4)]
    runs = {}
    for name, make in (("fused", lambda ps: adamw([{"params": ps}], 1e-2, 0.1)),
                       ("loop", lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1, foreach=False))):
        params = [torch.nn.Parameter(w.clone()) for w in weights]
        optimizer = make(params)
        for step_grads in grads:
            for p, g in zip(params, step_grads, strict=True):
                p.grad = g.clone()
            optimizer.step()
        runs[name] = (optimizer, params)
    assert runs["fused"][0].defaults["fused"] is True
    for a, b in zip(runs["fused"][1], runs["loop"][1], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert not (weights[0] - runs["fused"][1][0]).abs().max() < 1e-3  # the weights did move
    fsdp = SimpleNamespace(distributed_type=DistributedType.FSDP)
    assert not adamw([{"params": [torch.nn.Parameter(weights[1].clone())]}], 1e-2, accelerator=fsdp).defaults["fused"]
