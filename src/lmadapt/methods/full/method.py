"""full: fine-tune every parameter; the artifact is a plain HF model folder.

Encoders: the classification head (classifier + BERT pooler, as `head` trains) gets its own
learning rate, `full_head_lr` (default 1e-3), while the pretrained body uses the run's lr
(default 5e-5): a freshly initialised head barely moves at a fine-tuning lr in a short run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from lmadapt.data.task import Task
from lmadapt.methods.base import (
    RunContext,
    TaskModelAdapted,
    fitted,
    task_model_for,
    train_task_model,
)
from lmadapt.methods.full.config import FullConfig
from lmadapt.methods.head.method import head_modules
from lmadapt.models.task_model import TaskModel
from lmadapt.train.loop import TrainResult


def _save_model(tm: TaskModel, artifact_dir: Path) -> None:
    tm.model.save_pretrained(artifact_dir / "model", safe_serialization=True)
    tm.tokenizer.save_pretrained(artifact_dir / "model")


class Full:
    name = "full"
    config_class = FullConfig
    summary = "fine-tune all weights"
    model_kinds = ("encoder", "causal", "seq2seq")
    task_kinds = ("classification", "generation")
    trains = True
    lr_range = (1e-5, 3e-4)  # learning rates a search tries (log scale)

    def fit(self, train: Task, eval_task: Task | None, cfg: FullConfig,
            ctx: RunContext) -> tuple[TaskModelAdapted, TrainResult]:
        tm = task_model_for(train, ctx, method=self.name)
        for param in tm.model.parameters():
            param.requires_grad_(True)
        adapted = fitted(tm, _save_model)
        overrides = None
        if tm.kind == "encoder" and cfg.full_head_lr > 0:  # a fresh head learns faster
            overrides = {id(p): cfg.full_head_lr for m in head_modules(tm) for p in m.parameters()}
        result = train_task_model(tm, train, eval_task, ctx, cfg.full_default_lr, overrides)
        return adapted, result

    def load(self, artifact_dir: Path, task: Task, cfg: FullConfig, ctx: RunContext) -> TaskModelAdapted:
        local = replace(ctx, model=replace(ctx.model, model=str(artifact_dir / "model")))
        return fitted(task_model_for(task, local, method=self.name), _save_model)
