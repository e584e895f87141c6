"""head with unfreeze_last=0: the frozen body runs once per example; the head trains on its outputs.

What the head consumes, and so what is cached (float32, on the CPU):
- encoders (`FIRST_TOKEN`): the body's last hidden state at the first position, (N, C). BERT's
  pooler, RoBERTa's, ELECTRA's and DeBERTa's heads all read token 0 and nothing else; the pooler
  (trained by head) and the classifier run on it each step.
- causal LMs whose output layer is not tied to the input embedding (`LM_TARGETS`): the final
  hidden state at every position whose next token is a target, (n_i, C) per example, with those
  targets; the output layer and the model's own LM loss run on them. A tied output layer trains
  the input embedding too, so the body is not frozen there: no cache. Seq2seq models: no cache.

The body runs in eval mode, so dropout in the body is off. Without the cache (`cache_frozen=false`)
the frozen body runs inside the training loop in train mode, with its dropout on: on a body with
dropout the two differ (the cached one is deterministic); without dropout they agree up to float
rounding (tests/test_shared_work.py). Dropout in the head itself (BERT's classifier dropout) is on
in both. The states are computed at the model's dtype, without bf16 autocast.

Training goes through the shared loop (train/loop.py) on the same nn.Module with its body swapped
for a stub that hands the cached states on (`replaced`): parameter names, checkpoints, the
divergence guard, per-epoch validation scores and early stopping are the loop's own. Before that,
the stubbed model must give the full model's output on two probe texts; an architecture whose
head reads its body otherwise trains the usual way. The encoder body's states are shared with
`features` and across runs through the process's feature cache (models/feature_cache.py); the
recorded training time includes computing them, charged in full when another run did.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator

import numpy as np
import torch
from rich.console import Console
from transformers.modeling_outputs import BaseModelOutputWithPast, BaseModelOutputWithPooling

from lmadapt.data.task import Example, Task
from lmadapt.decoding.engine import position_ids_for
from lmadapt.methods.base import RunContext, with_default_lr
from lmadapt.models.embed import frozen_states, pool
from lmadapt.models.feature_cache import FEATURES, Computed, inputs_digest, weights_fingerprint
from lmadapt.models.task_model import TaskModel
from lmadapt.train.config import TrainConfig
from lmadapt.train.loop import TrainResult, train

console = Console(stderr=True)
FIRST_TOKEN, LM_TARGETS = "first-token", "lm-targets"
PROBE = ["the head reads the frozen body", "a second and longer probe sentence, with a comma"]


class FirstTokenBody(torch.nn.Module):
    """Stands in for an encoder body: takes its cached first-token states as `inputs_embeds`
    (B, 1, C) and runs the body's pooler on them (the pooler belongs to the head and trains)."""

    def __init__(self, pooler: torch.nn.Module | None) -> None:
        super().__init__()
        self.pooler = pooler

    def forward(self, input_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None,
                **_: object) -> BaseModelOutputWithPooling:
        pooled = self.pooler(inputs_embeds) if self.pooler is not None else None  # (B, C)
        return BaseModelOutputWithPooling(last_hidden_state=inputs_embeds, pooler_output=pooled)


class HiddenBody(torch.nn.Module):
    """Stands in for a causal LM's body: its cached final hidden states come in as `inputs_embeds`
    (B, L, C) and go out as the last hidden state the output layer reads."""

    def forward(self, input_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None,
                **_: object) -> BaseModelOutputWithPast:
        return BaseModelOutputWithPast(last_hidden_state=inputs_embeds)


@contextlib.contextmanager
def replaced(model: torch.nn.Module, body: torch.nn.Module) -> Iterator[None]:
    """Within the block, `body` is model's base model (the attribute `base_model_prefix` names)."""
    prefix = model.base_model_prefix
    saved = getattr(model, prefix)
    setattr(model, prefix, body)
    try:
        yield
    finally:
        setattr(model, prefix, saved)


def cached_kind(tm: TaskModel) -> str | None:
    """FIRST_TOKEN, LM_TARGETS, or None when this model's head does not sit on a frozen body."""
    model = tm.model
    if tm.kind == "encoder" and tm.task.kind == "classification" and tm.tokenizer.padding_side == "right":
        return FIRST_TOKEN
    if tm.kind == "causal":
        out, inp = model.get_output_embeddings(), model.get_input_embeddings()
        tied = out is None or inp is None or out.weight.data_ptr() == inp.weight.data_ptr()
        return None if tied else LM_TARGETS
    return None


def stub_for(model: torch.nn.Module, kind: str) -> torch.nn.Module:
    body = getattr(model, model.base_model_prefix)
    return FirstTokenBody(getattr(body, "pooler", None)) if kind == FIRST_TOKEN else HiddenBody()


def target_rows(hidden: torch.Tensor, labels: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per row of (B, T, C) hidden states and (B, T) labels: the states at the positions whose next
    token is a target (the shift the LM loss makes), (n_i, C), and those targets, (n_i,)."""
    keep = labels[:, 1:] != -100  # (B, T-1)
    return ([hidden[b, :-1][keep[b]] for b in range(hidden.shape[0])],
            [labels[b, 1:][keep[b]] for b in range(labels.shape[0])])


def lm_batch(states: list[torch.Tensor], targets: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Target states as a batch the LM loss reads like the full one: (B, L+1, C) states, zero after
    each row's n_i, and (B, L+1) labels with row b's targets at 1..n_b (the loss shifts by one)."""
    width = max((len(t) for t in targets), default=0) + 1
    embeds = states[0].new_zeros(len(states), width, states[0].shape[-1])
    labels = torch.full((len(targets), width), -100, dtype=torch.long, device=embeds.device)
    for b, (s, t) in enumerate(zip(states, targets, strict=True)):
        embeds[b, :len(t)] = s
        labels[b, 1:len(t) + 1] = t
    return embeds, labels


@torch.no_grad()
def reproduces(tm: TaskModel, stub: torch.nn.Module, kind: str) -> bool:
    """Whether the model with `stub` as its body gives the full model's logits (encoders) or loss
    (causal LMs) on PROBE, fed the body states the cache would hold."""
    model, was_training = tm.model, tm.model.training
    enc = tm.tokenizer(PROBE, truncation=True, padding=True, max_length=tm.max_length,
                       return_tensors="pt").to(tm.device)
    captured: dict[str, torch.Tensor] = {}
    body = getattr(model, model.base_model_prefix)
    handle = body.register_forward_hook(lambda _m, _a, out: captured.__setitem__("hidden", out[0]))
    model.eval()
    try:
        if kind == FIRST_TOKEN:
            full = model(**enc).logits
            first = pool(captured["hidden"], enc["attention_mask"], "cls")[:, None]  # (B, 1, C)
            with replaced(model, stub):
                part = model(inputs_embeds=first).logits
        else:
            ids, mask = enc["input_ids"], enc["attention_mask"]
            labels = ids.masked_fill(mask == 0, -100)
            full = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_for(mask), labels=labels).loss
            embeds, shifted = lm_batch(*target_rows(captured["hidden"], labels))
            with replaced(model, stub):
                part = model(inputs_embeds=embeds, labels=shifted).loss
    except (RuntimeError, TypeError, ValueError, AttributeError, KeyError, IndexError):
        return False
    finally:
        handle.remove()
        model.train(was_training)
    # the same head ops on the same states; half precision rounds matmuls of other shapes apart
    rtol, atol = (1e-4, 1e-5) if model.dtype == torch.float32 else (2e-2, 1e-2)
    return part.shape == full.shape and torch.allclose(part.float(), full.float(), rtol=rtol, atol=atol)


def lm_target_states(tm: TaskModel, examples: list[Example], batch_size: int,
                     fingerprint: str | None) -> Computed:
    """The LM_TARGETS states of each example's training sequence (tm.collate): "states" (Σn_i, C),
    "targets" (Σn_i,), "offsets" (N+1,) into both, "tokens" (N,); through the feature cache,
    keyed by the token ids and labels of every sequence."""
    batches = [tm.collate(examples[s:s + batch_size]) for s in range(0, len(examples), batch_size)]
    rows = [ids[mask.bool()].numpy().tobytes() + b"|" + labels[mask.bool()].numpy().tobytes()
            for batch in batches
            for ids, mask, labels in zip(batch["input_ids"], batch["attention_mask"], batch["labels"], strict=True)]
    key = None if fingerprint is None else (LM_TARGETS, fingerprint, tm.max_length, inputs_digest(rows))
    body = getattr(tm.model, tm.model.base_model_prefix)

    @torch.inference_mode()
    def compute() -> dict[str, np.ndarray]:
        states, targets, tokens, was_training = [], [], [], body.training
        body.eval()
        try:
            for batch in batches:
                hidden = body(input_ids=batch["input_ids"].to(tm.device),
                              attention_mask=batch["attention_mask"].to(tm.device),
                              position_ids=batch["position_ids"].to(tm.device)).last_hidden_state  # (B, T, C)
                row_states, row_targets = target_rows(hidden.float().cpu(), batch["labels"])
                states += row_states
                targets += row_targets
                tokens.append(batch["attention_mask"].sum(1))
        finally:
            body.train(was_training)
        lengths = [len(t) for t in targets]
        return {"states": torch.cat(states).numpy(), "targets": torch.cat(targets).numpy(),
                "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                "tokens": torch.cat(tokens).numpy()}

    return FEATURES.get_or_compute(key, compute)


class CachedRows:
    """The loop's task model for a head on a frozen body: a batch is its examples' cached body
    states; the loss is the model's own, run with the body replaced by a stub."""

    def __init__(self, model: torch.nn.Module, kind: str, examples: list[Example], computed: Computed,
                 label_ids: list[int] | None = None) -> None:
        self.model, self.kind, self.arrays, self.label_ids = model, kind, computed.arrays, label_ids
        self.row = {id(ex): i for i, ex in enumerate(examples)}  # the loop hands back these objects

    def collate(self, examples: list[Example]) -> dict[str, torch.Tensor]:
        rows = [self.row[id(ex)] for ex in examples]
        tokens = torch.from_numpy(self.arrays["tokens"][rows])
        if self.kind == FIRST_TOKEN:
            first = torch.from_numpy(self.arrays["cls"][rows])[:, None]  # (B, 1, C)
            return {"inputs_embeds": first, "labels": torch.tensor([self.label_ids[r] for r in rows]),
                    "tokens": tokens}
        offsets, states, targets = self.arrays["offsets"], self.arrays["states"], self.arrays["targets"]
        embeds, labels = lm_batch([torch.tensor(states[offsets[r]:offsets[r + 1]]) for r in rows],
                                  [torch.tensor(targets[offsets[r]:offsets[r + 1]]) for r in rows])
        return {"inputs_embeds": embeds, "labels": labels, "tokens": tokens}

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        embeds = batch["inputs_embeds"].to(self.model.dtype)
        return model(inputs_embeds=embeds, labels=batch["labels"]).loss

    @staticmethod
    def count_tokens(batch: dict[str, torch.Tensor]) -> int:
        return int(batch["tokens"].sum())  # the tokens the body read for these examples


@torch.inference_mode()
def first_token_logits(model: torch.nn.Module, first: np.ndarray, batch_size: int) -> torch.Tensor:
    """(N, L) logits of the (stubbed) encoder from cached first-token states (N, C)."""
    device = next(model.parameters()).device
    return torch.cat([model(inputs_embeds=torch.tensor(first[s:s + batch_size])[:, None].to(device, model.dtype)
                            ).logits.float().cpu() for s in range(0, len(first), batch_size)])


def scorer(predict: Callable[[], list[str]], task: Task, cfg: TrainConfig) -> Callable[[int], dict]:
    """The loop's per-epoch eval: predictions on `task`, scored with its metric."""
    from lmadapt.eval.metrics import score_predictions

    def eval_fn(epoch: int) -> dict:
        return {"score": score_predictions(predict(), task.targets(), task.kind, cfg.seed, task.metric)["score"]}

    return eval_fn


def fit_frozen(tm: TaskModel, train_task: Task, eval_task: Task | None, ctx: RunContext,
               default_lr: float) -> TrainResult | None:
    """Train tm's head (already selected trainable) on cached states of its frozen body, scoring
    eval_task after each epoch like `methods.base.train_task_model`; None when this model's head
    cannot (the caller then trains the usual way)."""
    kind = cached_kind(tm)
    if kind is None:
        return None
    stub = stub_for(tm.model, kind)
    if not reproduces(tm, stub, kind):
        console.print(f"[dim]head: {type(tm.model).__name__} does not read its body as expected; "
                      "the frozen body runs in the training loop[/dim]")
        return None
    train_task.check_trainable()
    # the body is not in the graph: no activations of it for checkpointing to recompute
    cfg = dataclasses.replace(with_default_lr(ctx.train, default_lr), gradient_checkpointing=False)
    fingerprint = weights_fingerprint(ctx.model)
    model, body = tm.model, getattr(tm.model, tm.model.base_model_prefix)
    label_ids = None
    if kind == FIRST_TOKEN:
        computed = frozen_states(body, tm.tokenizer, train_task.texts(), tm.max_length, cfg.eval_batch_size,
                                 fingerprint, progress=True)
        label_ids = train_task.label_ids()
    else:
        computed = lm_target_states(tm, train_task.examples, cfg.eval_batch_size, fingerprint)
    seconds, eval_fn = computed.seconds, None
    if eval_task is not None and (cfg.eval_each_epoch or cfg.early_stop_patience > 0):
        if kind == FIRST_TOKEN:  # validation predictions from cached states too
            val = frozen_states(body, tm.tokenizer, eval_task.texts(), tm.max_length, cfg.eval_batch_size,
                                fingerprint)
            seconds += val.seconds

            def predict() -> list[str]:
                logits = first_token_logits(model, val.arrays["cls"], cfg.eval_batch_size)
                return [tm.task.labels[i] for i in logits.argmax(dim=1).tolist()]
        else:  # label scoring or generation: the whole model, body put back for the while

            def predict() -> list[str]:
                with replaced(model, body):
                    return tm.predict(eval_task.texts(), cfg.eval_batch_size)
        eval_fn = scorer(predict, eval_task, cfg)
    stand_in = CachedRows(model, kind, train_task.examples, computed, label_ids)
    with replaced(model, stub):
        result = train(stand_in, train_task.examples, cfg, ctx.work_dir, eval_fn)
    tm.model = model
    result.seconds += seconds  # the body's share of the training cost
    return result
