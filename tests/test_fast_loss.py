"""A causal LM's training loss reads logits only at the target positions (`logits_to_keep`):
the same loss and gradients as the model's own full-logits loss, on every batch shape."""

import json

import pytest
import torch
from peft import PromptTuningConfig, TaskType, get_peft_model

from lmadapt.data.loaders import DataSpec, load_task
from lmadapt.models.load import ModelSpec
from lmadapt.models.task_model import build_task_model
from tiny import toy_chat_rows, toy_rows, write_jsonl


def _full_loss(tm, batch):
    return tm.model(**batch).loss


def _same_loss_and_grads(tm, batch):
    params = [p for p in tm.model.parameters() if p.requires_grad]
    tm.model.zero_grad()
    full = _full_loss(tm, batch)
    full.backward()
    want = [p.grad.clone() for p in params]
    tm.model.zero_grad()
    fast = tm.loss(tm.model, batch)
    fast.backward()
    assert fast.item() == pytest.approx(full.item(), rel=1e-5, abs=1e-6)
    for w, p in zip(want, params, strict=True):
        torch.testing.assert_close(p.grad, w, rtol=1e-4, atol=1e-6)


def _task(tmp_path, rows, **spec):
    return load_task(write_jsonl(tmp_path / "d.jsonl", rows), DataSpec(**spec))


@pytest.mark.parametrize("kind", ["generation", "classification"])
def test_target_positions_only_on_plain_batches(tiny_llama, tmp_path, kind):
    task = _task(tmp_path, toy_rows(8, seed=3, kind=kind), template="Review: {text}\nAnswer:")
    tm = build_task_model(ModelSpec(model=str(tiny_llama)), task, max_length=64)
    tm.model.train()
    batch = tm.collate(task.examples)
    keep = tm._loss_positions(batch)
    assert keep is not None and keep < batch["labels"].shape[1]  # fewer positions than the sequence
    _same_loss_and_grads(tm, batch)


def test_target_positions_on_chat_batches_and_prompt_tuning(tiny_chat_llama, tmp_path):
    rows = toy_chat_rows(8, seed=1)
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = load_task(tmp_path / "c.jsonl", DataSpec())
    tm = build_task_model(ModelSpec(model=str(tiny_chat_llama)), task, max_length=96)
    tm.model.train()
    batch = tm.collate(task.examples)
    _same_loss_and_grads(tm, batch)
    tm.model = get_peft_model(tm.model, PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=4))
    _same_loss_and_grads(tm, batch)


def test_batch_without_targets_falls_back(tiny_llama, tmp_path):
    task = _task(tmp_path, toy_rows(4, seed=2, kind="generation"))
    tm = build_task_model(ModelSpec(model=str(tiny_llama)), task, max_length=64)
    batch = tm.collate(task.examples)
    batch["labels"][:] = -100
    assert tm._loss_positions(batch) is None


def test_gradient_checkpointing_trains_the_same_steps(tiny_llama, tmp_path):
    """The same losses step by step with `gradient_checkpointing=true` (recomputed activations)
    as without, for a LoRA-wrapped causal LM; a model without support is one line."""
    from peft import LoraConfig

    from lmadapt.errors import LmadaptError
    from lmadapt.train.config import TrainConfig
    from lmadapt.train.loop import enable_checkpointing, train

    task = _task(tmp_path, toy_rows(16, seed=4, kind="generation"))
    curves = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        tm = build_task_model(ModelSpec(model=str(tiny_llama)), task, max_length=64)
        tm.model = get_peft_model(tm.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
        cfg = TrainConfig(epochs=2, batch_size=8, lr=1e-2, gradient_checkpointing=checkpointing)
        curves.append(train(tm, task.examples, cfg).losses)
        if checkpointing:
            assert tm.model.get_base_model().is_activation_checkpointing
    assert curves[0] == pytest.approx(curves[1], rel=1e-5)
    with pytest.raises(LmadaptError, match="does not support it"):
        enable_checkpointing(torch.nn.Linear(2, 2))
