"""adapter: bottleneck adapters (Houlsby or Pfeiffer placement) + the classifier head for encoders."""

from __future__ import annotations

from pathlib import Path

from lmadapt.data.task import Task
from lmadapt.methods.adapter.config import AdapterMethodConfig
from lmadapt.methods.adapter.model import add_adapters
from lmadapt.methods.base import (
    RunContext,
    TaskModelAdapted,
    fit_built,
    load_built,
)
from lmadapt.methods.head.method import head_modules
from lmadapt.models.task_model import TaskModel
from lmadapt.train.loop import TrainResult


def freeze_all_but_head(tm: TaskModel) -> None:
    """Freeze the base model; an encoder's new classifier head stays trainable."""
    tm.model.requires_grad_(False)
    if tm.kind == "encoder":
        for module in head_modules(tm):
            module.requires_grad_(True)


def build(tm: TaskModel, cfg: AdapterMethodConfig) -> None:
    freeze_all_but_head(tm)
    add_adapters(tm.model, cfg.adapter_placement, cfg.adapter_reduction, cfg.adapter_act)  # new → trainable


class Adapter:
    name = "adapter"
    config_class = AdapterMethodConfig
    summary = "bottleneck adapters after attention and/or FFN (Houlsby / Pfeiffer), base frozen"
    model_kinds = ("encoder", "causal", "seq2seq")
    task_kinds = ("classification", "generation")
    trains = True
    lr_range = (1e-4, 5e-3)  # learning rates a search tries (log scale)
    merge_note = "bottleneck adapters add a non-linear branch, which no weight matrix can absorb"

    def fit(self, train: Task, eval_task: Task | None, cfg: AdapterMethodConfig,
            ctx: RunContext) -> tuple[TaskModelAdapted, TrainResult]:
        return fit_built(lambda tm: build(tm, cfg), train, eval_task, ctx, self.name, cfg.adapter_default_lr)

    def load(self, artifact_dir: Path, task: Task, cfg: AdapterMethodConfig, ctx: RunContext) -> TaskModelAdapted:
        return load_built(lambda tm: build(tm, cfg), artifact_dir, task, ctx, self.name)
