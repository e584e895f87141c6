"""head: train the output layer only (+ the last k transformer blocks with unfreeze_last=k).

Encoders: the sequence-classification head (every parameter outside the base model, plus the
BERT-style pooler that feeds it: sentence-transformers checkpoints such as MiniLM pool by mean and
never trained it).
Causal / seq2seq LMs: the output embedding (`lm_head`); when it is tied to the input embedding,
that shared matrix trains.
With unfreeze_last=0 the body is frozen: it runs once per example and the head trains on its
cached outputs (`cached.py`; `cache_frozen=false` runs it at every step instead).
"""

from __future__ import annotations

from pathlib import Path

import torch

from lmadapt.data.task import Task
from lmadapt.errors import LmadaptError
from lmadapt.methods.base import (
    RunContext,
    TaskModelAdapted,
    fit_built,
    fitted,
    load_built,
    save_trainable,
    task_model_for,
    train_task_model,
)
from lmadapt.methods.head.cached import fit_frozen
from lmadapt.methods.head.config import HeadConfig
from lmadapt.models.load import find_layer_stack
from lmadapt.models.task_model import TaskModel
from lmadapt.train.loop import TrainResult
from lmadapt.utils import seed_everything


def head_modules(tm: TaskModel) -> list[torch.nn.Module]:
    """The output layer(s) of tm.model."""
    model = tm.model
    if tm.kind == "encoder":
        prefix = model.base_model_prefix
        heads = [m for name, m in model.named_children() if name != prefix]
        if not heads:
            raise LmadaptError(f"cannot find the classification head of {type(model).__name__}")
        pooler = getattr(getattr(model, prefix, None), "pooler", None)
        if pooler is not None:  # BERT-style heads read the pooler: it belongs to the head
            heads.append(pooler)
        return heads
    out = model.get_output_embeddings()
    if out is None:
        raise LmadaptError(f"{type(model).__name__} has no output layer to train")
    return [out]


def select_trainable(tm: TaskModel, unfreeze_last: int) -> None:
    tm.model.requires_grad_(False)
    modules = head_modules(tm)
    if unfreeze_last:
        stack = find_layer_stack(tm.model)
        if unfreeze_last > len(stack):
            raise LmadaptError(f"unfreeze_last={unfreeze_last} but the model has {len(stack)} layers")
        modules += list(stack[-unfreeze_last:])
    for module in modules:
        module.requires_grad_(True)


class Head:
    name = "head"
    config_class = HeadConfig
    summary = "train the output layer (and optionally the last k blocks)"
    model_kinds = ("encoder", "causal", "seq2seq")
    task_kinds = ("classification", "generation")
    trains = True
    lr_range = (1e-4, 1e-2)  # learning rates a search tries (log scale)

    def fit(self, train: Task, eval_task: Task | None, cfg: HeadConfig,
            ctx: RunContext) -> tuple[TaskModelAdapted, TrainResult]:
        if cfg.unfreeze_last or not cfg.cache_frozen:
            return fit_built(lambda tm: select_trainable(tm, cfg.unfreeze_last), train, eval_task, ctx, self.name,
                             cfg.head_default_lr)
        tm = task_model_for(train, ctx, method=self.name)
        seed_everything(ctx.train.seed)  # as fit_built: the same start either way
        select_trainable(tm, 0)
        result = fit_frozen(tm, train, eval_task, ctx, cfg.head_default_lr)
        if result is None:  # a head that does not sit on a frozen body (e.g. a tied LM head)
            result = train_task_model(tm, train, eval_task, ctx, cfg.head_default_lr)
        return fitted(tm, save_trainable), result

    def load(self, artifact_dir: Path, task: Task, cfg: HeadConfig, ctx: RunContext) -> TaskModelAdapted:
        return load_built(lambda tm: select_trainable(tm, cfg.unfreeze_last), artifact_dir, task, ctx, self.name)
