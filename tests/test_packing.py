"""Packing (`packing=true`, models/packing.py): examples end to end in rows of max_length, each
with its own positions and attention. Contract: the packed loss and gradients equal the unpacked
ones, example by example (tolerance 1e-5), on a tiny Llama with full weights and with LoRA; the
loop trains the same curve packed or padded and resumes exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model

from lmadapt.data.loaders import DataSpec, load_task
from lmadapt.errors import LmadaptError
from lmadapt.models.load import ModelSpec
from lmadapt.models.packing import check_packing, pack_bins, pack_rows
from lmadapt.models.task_model import build_task_model
from lmadapt.train.checkpoint import latest_checkpoint
from lmadapt.train.config import TrainConfig
from lmadapt.train.loop import train
from tiny import toy_chat_rows, toy_rows, write_jsonl

TOL = 1e-5


def test_pack_rows_restarts_positions_and_keeps_examples_apart():
    rows = [([1, 2, 3], [-100, 2, 3]), ([4, 5], [-100, 5]), ([6, 7, 8, 9], [-100, -100, 8, 9]), ([10], [10])]
    batch = pack_rows(rows, width=5, pad_id=0)
    assert pack_bins([3, 2, 4, 1], 5) == [[2, 3], [0, 1]]  # longest first, each into the first row with room
    assert batch["input_ids"].tolist() == [[6, 7, 8, 9, 10], [1, 2, 3, 4, 5]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 0], [0, 1, 2, 0, 1]]
    # a segment's first token never has a label: the token before it is another example's
    assert batch["labels"].tolist() == [[-100, -100, 8, 9, -100], [-100, 2, 3, -100, 5]]
    assert int(batch["num_tokens"]) == 10
    tail = pack_rows(rows[:2], width=8, pad_id=0)  # one row, trimmed to its 5 tokens
    assert tail["input_ids"].shape == (1, 5)
    padded = pack_rows([rows[0], rows[2]], width=5, pad_id=0)  # 4 + 3: two rows, the shorter padded
    assert padded["input_ids"].tolist() == [[6, 7, 8, 9], [1, 2, 3, 0]]
    assert padded["position_ids"][1].tolist() == [0, 1, 2, 0] and padded["labels"][1, 3] == -100


def _task(tmp_path: Path, chat: bool):
    if chat:  # multi-turn rows: targets scattered through each example
        (tmp_path / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in toy_chat_rows(8, seed=1)))
        return load_task(tmp_path / "c.jsonl", DataSpec())
    return load_task(write_jsonl(tmp_path / "d.jsonl", toy_rows(8, seed=3, kind="generation")), DataSpec())


def _loss_and_grads(tm, batch) -> tuple[float, list[torch.Tensor]]:
    params = [p for p in tm.model.parameters() if p.requires_grad]
    tm.model.zero_grad()
    loss = tm.loss(tm.model, batch)
    loss.backward()
    return loss.item(), [p.grad.clone() for p in params]


@pytest.mark.parametrize("chat", [False, True], ids=["prompt-target", "chat"])
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_packed_loss_and_grads_equal_unpacked_per_example(tiny_llama, tiny_chat_llama, tmp_path, lora, chat):
    task = _task(tmp_path, chat)
    tm = build_task_model(ModelSpec(model=str(tiny_chat_llama if chat else tiny_llama)), task, max_length=40)
    if lora:
        tm.model = get_peft_model(tm.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    tm.model.train()
    examples = task.examples
    packed = tm.collate_packed(examples)
    assert 1 < packed["input_ids"].shape[0] < len(examples)  # several examples per row, several rows
    # unpacked, example by example: sum of each example's token losses over all target tokens
    per_example = [tm.collate([ex]) for ex in examples]
    counts = [int((b["labels"][:, 1:] != -100).sum()) for b in per_example]
    want_loss, want_grads = 0.0, None
    for batch, n in zip(per_example, counts, strict=True):
        loss, grads = _loss_and_grads(tm, batch)
        weight = n / sum(counts)
        want_loss += loss * weight
        want_grads = [g * weight for g in grads] if want_grads is None else \
            [w + g * weight for w, g in zip(want_grads, grads, strict=True)]
    loss, grads = _loss_and_grads(tm, packed)
    assert loss == pytest.approx(want_loss, abs=TOL)
    for got, want in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=TOL, atol=TOL)
    assert tm.count_tokens(packed) == sum(len(b["input_ids"][0]) for b in per_example)


def test_a_model_that_lets_packed_examples_mix_is_refused(tiny_llama, tmp_path):
    class DropsPositions(torch.nn.Module):  # ignores position ids: one causal sequence per row
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, position_ids=None, **kwargs):
            return self.inner(**kwargs)

    tm = build_task_model(ModelSpec(model=str(tiny_llama)), _task(tmp_path, chat=False), max_length=40)
    ids = torch.tensor([[5, 9, 12, 7, 20, 14, 8]])
    check_packing(tm.model, tm.model, ids)  # the model itself keeps them apart
    with pytest.raises(LmadaptError, match="packing=true: LlamaForCausalLM .* leave packing off"):
        check_packing(DropsPositions(tm.model), tm.model, ids)


def _train(model_dir: Path, task, cfg: TrainConfig, out: Path | None = None, stop: int | None = None):
    torch.manual_seed(0)
    tm = build_task_model(ModelSpec(model=str(model_dir)), task, max_length=cfg.max_length)
    tm.model = get_peft_model(tm.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.1))
    return tm, train(tm, task.examples, cfg, out, stop_at_step=stop)


def test_packed_training_matches_padded_and_resumes_exactly(tiny_llama, tmp_path):
    """The loop's curve is the same packed or padded (same examples per step, dropout off), and a
    packed run stopped after a checkpoint resumes to the uninterrupted run's curve (dropout on)."""
    task = load_task(write_jsonl(tmp_path / "d.jsonl", toy_rows(32, seed=5, kind="generation")), DataSpec())
    cfg = TrainConfig(epochs=2, batch_size=8, grad_accum=2, lr=1e-2, max_length=24, eval_each_epoch=False)
    runs = []
    for packing in (False, True):
        torch.manual_seed(0)
        tm = build_task_model(ModelSpec(model=str(tiny_llama)), task, max_length=24)
        tm.model = get_peft_model(tm.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
        runs.append(train(tm, task.examples, TrainConfig(**{**cfg.__dict__, "packing": packing})))
    assert runs[1].losses == pytest.approx(runs[0].losses, abs=1e-5)
    assert runs[1].tokens == runs[0].tokens  # real tokens only, packed or padded

    packed = TrainConfig(**{**cfg.__dict__, "packing": True, "save_every": 3})
    tm_full, full = _train(tiny_llama, task, packed, tmp_path / "a")
    _train(tiny_llama, task, packed, tmp_path / "b", stop=5)
    assert latest_checkpoint(tmp_path / "b" / "checkpoints").name == "step-3"
    tm_res, resumed = _train(tiny_llama, task, TrainConfig(**{**packed.__dict__, "resume": True}), tmp_path / "b")
    assert resumed.losses == pytest.approx(full.losses, abs=1e-6)
    for (name, a), (_, b) in zip(tm_full.model.named_parameters(), tm_res.model.named_parameters(), strict=True):
        torch.testing.assert_close(a, b, msg=name)


def test_packing_where_it_cannot_apply_pads_with_a_warning(tiny_bert, toy_data):
    task = load_task(toy_data[0], DataSpec())
    tm = build_task_model(ModelSpec(model=str(tiny_bert)), task, max_length=32)
    assert tm.collate_packed(task.examples[:4]) is None
    with pytest.warns(UserWarning, match="this run pads its batches"):
        result = train(tm, task.examples[:16], TrainConfig(epochs=1, batch_size=8, packing=True, eval_each_epoch=False))
    assert result.steps == 2
