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


# ---- gathered, chunked: the head runs only on target positions (models/lm_loss.py) ----------------

def _head_calls(tm) -> list[tuple[int, ...]]:
    """Shapes of what the model's own call to its LM head returns (a forward hook)."""
    from lmadapt.models.lm_loss import output_head

    shapes: list[tuple[int, ...]] = []
    output_head(tm.model).register_forward_hook(lambda _m, _a, out: shapes.append(tuple(out.shape)))
    return shapes


@pytest.mark.parametrize("chunk", [0, 3], ids=["gathered", "chunked"])
def test_gathered_loss_on_scattered_targets_equals_full_logits(tiny_chat_llama, tmp_path, chunk):
    """Multi-turn chat rows put targets in several places of a row (logits_to_keep could only trim
    a prefix); the head sees only the K target-predicting positions, `loss_chunk` at a time, and
    the loss and gradients equal the model's own full-logits loss."""
    rows = toy_chat_rows(8, seed=1)
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = load_task(tmp_path / "c.jsonl", DataSpec(train_on="all"))
    tm = build_task_model(ModelSpec(model=str(tiny_chat_llama)), task, max_length=96)
    tm.loss_chunk = chunk
    tm.model.train()
    batch = tm.collate(task.examples)
    predicts = batch["labels"][:, 1:] != -100
    gaps = (predicts[:, 1:].int() - predicts[:, :-1].int() == 1).sum(dim=1)  # target runs starting after a gap
    assert int(gaps.max()) >= 2  # some row has targets in two separate places
    shapes = _head_calls(tm)
    _same_loss_and_grads(tm, batch)
    assert tm._head_verdict[1] and shapes[-1][1] == 0  # the model's own head call got an empty sequence


@pytest.mark.parametrize("lora_targets", [None, ["q_proj", "v_proj", "lm_head"]], ids=["full", "lora+head"])
def test_chunked_loss_equals_full_logits_for_full_and_lora(tiny_llama, tmp_path, lora_targets):
    from peft import LoraConfig

    task = _task(tmp_path, toy_rows(8, seed=3, kind="generation"), template="Review: {text}\nAnswer:")
    tm = build_task_model(ModelSpec(model=str(tiny_llama)), task, max_length=64)
    if lora_targets:
        tm.model = get_peft_model(tm.model, LoraConfig(r=4, target_modules=lora_targets, lora_dropout=0.0))
    tm.loss_chunk = 2
    tm.model.train()
    _same_loss_and_grads(tm, tm.collate(task.examples))
    assert tm._head_verdict[1]


def _bare_task_model(tiny_llama, tmp_path, model):
    from transformers import AutoTokenizer

    from lmadapt.models.task_model import TaskModel

    task = _task(tmp_path, toy_rows(8, seed=3, kind="generation"))
    return TaskModel(model=model, tokenizer=AutoTokenizer.from_pretrained(tiny_llama), task=task,
                     kind="causal", ref="tiny", max_length=64), task


def test_softcapped_and_scaled_logits_are_applied(tiny_llama, tmp_path):
    """Gemma 2's final soft-capping and Cohere's logit scale sit between head and logits: the
    gathered loss applies them and still equals the model's own loss."""
    from transformers import CohereConfig, CohereForCausalLM, Gemma2Config, Gemma2ForCausalLM

    from tiny import VOCAB

    small = {"vocab_size": len(VOCAB), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 2, "num_key_value_heads": 1, "pad_token_id": 0}
    torch.manual_seed(0)
    models = [Gemma2ForCausalLM(Gemma2Config(**small, head_dim=16, final_logit_softcapping=0.5)),
              CohereForCausalLM(CohereConfig(**small, logit_scale=3.0))]
    for model in models:
        tm, task = _bare_task_model(tiny_llama, tmp_path, model)
        tm.model.train()
        _same_loss_and_grads(tm, tm.collate(task.examples))
        assert tm._head_verdict[1], type(model).__name__


def test_a_transform_the_probe_does_not_reproduce_falls_back(tiny_llama, tmp_path):
    """A config naming a logit scale the model's forward does not apply (Llama ignores it): the
    probe finds transform(head(x)) != logits, and the loss keeps the full-logits path."""
    task = _task(tmp_path, toy_rows(8, seed=3, kind="generation"))
    tm = build_task_model(ModelSpec(model=str(tiny_llama)), task, max_length=64)
    tm.model.config.logit_scale = 0.5
    tm.model.train()
    _same_loss_and_grads(tm, tm.collate(task.examples))
    assert tm._head_verdict[1] is False


@pytest.mark.parametrize("method", ["full", "lora", "adapter"])
def test_checkpointed_gradients_equal_plain_ones(tiny_llama, tmp_path, method):
    """gradient_checkpointing=true (non-reentrant) recomputes each layer in the backward pass: the
    same gradients for full weights, peft LoRA and our bottleneck adapters (frozen base: no input
    needs a gradient, which the reentrant variant would require)."""
    from peft import LoraConfig

    from lmadapt.methods.adapter.model import add_adapters
    from lmadapt.train.loop import enable_checkpointing

    task = _task(tmp_path, toy_rows(8, seed=4, kind="generation"))
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        tm = build_task_model(ModelSpec(model=str(tiny_llama)), task, max_length=64)
        if method == "lora":
            tm.model = get_peft_model(tm.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
        elif method == "adapter":
            tm.model.requires_grad_(False)
            add_adapters(tm.model, "houlsby", 4, "relu")
        for p in tm.model.parameters():  # zero-initialised LoRA B / adapter up-projections: move them
            if p.requires_grad and not p.any():
                p.data.normal_(0, 0.1)
        if checkpointing:
            enable_checkpointing(tm.model)
            layer = tm.model.get_base_model().model.layers[0] if method == "lora" else tm.model.model.layers[0]
            assert layer.gradient_checkpointing and layer._gradient_checkpointing_func.keywords["use_reentrant"] is False
        tm.model.train()
        tm.loss(tm.model, tm.collate(task.examples)).backward()
        grads.append({n: p.grad for n, p in tm.model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name, plain in grads[0].items():
        assert plain.abs().sum() > 0, name
        torch.testing.assert_close(grads[1][name], plain, rtol=1e-5, atol=1e-6, msg=name)


def test_loss_chunk_may_change_on_resume_and_packing_may_not(tiny_llama, tmp_path):
    """loss_chunk computes the same loss in smaller pieces (e.g. to resume after running out of
    memory): a resume may change it. packing shapes the batches, so it is part of the settings."""
    from dataclasses import replace

    from lmadapt.methods.full import FullConfig
    from lmadapt.run import run_settings
    from lmadapt.train.config import TrainConfig

    task = _task(tmp_path, toy_rows(8, seed=3, kind="generation"))
    spec, cfg = ModelSpec(model=str(tiny_llama)), TrainConfig()

    def settings(train_cfg):
        return run_settings("full", FullConfig(), spec, train_cfg, task)
    assert settings(replace(cfg, loss_chunk=64)) == settings(cfg)
    assert settings(replace(cfg, packing=True)) != settings(cfg)
