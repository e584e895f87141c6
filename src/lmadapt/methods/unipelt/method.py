"""unipelt: gated LoRA + prefix + adapter (Mao et al., 2022); base frozen, encoder head trains."""

from __future__ import annotations

from pathlib import Path

from lmadapt.data.task import Task
from lmadapt.methods.adapter.method import freeze_all_but_head
from lmadapt.methods.base import (
    RunContext,
    TaskModelAdapted,
    fit_built,
    load_built,
)
from lmadapt.methods.unipelt.config import UnipeltMethodConfig
from lmadapt.methods.unipelt.model import add_unipelt
from lmadapt.models.task_model import TaskModel
from lmadapt.train.loop import TrainResult


def _build(tm: TaskModel, cfg: UnipeltMethodConfig) -> None:
    freeze_all_but_head(tm)
    add_unipelt(tm.model, cfg)


class Unipelt:
    name = "unipelt"
    config_class = UnipeltMethodConfig
    summary = "UniPELT: LoRA + prefix + adapter, each behind a learned gate"
    model_kinds = ("encoder", "causal", "seq2seq")
    task_kinds = ("classification", "generation")
    trains = True
    lr_range = (1e-4, 5e-3)  # learning rates a search tries (log scale)
    merge_note = "its gates depend on the input and its adapter/prefix parts are not weight updates"

    def fit(self, train: Task, eval_task: Task | None, cfg: UnipeltMethodConfig,
            ctx: RunContext) -> tuple[TaskModelAdapted, TrainResult]:
        return fit_built(lambda tm: _build(tm, cfg), train, eval_task, ctx, self.name, cfg.unipelt_default_lr)

    def load(self, artifact_dir: Path, task: Task, cfg: UnipeltMethodConfig, ctx: RunContext) -> TaskModelAdapted:
        return load_built(lambda tm: _build(tm, cfg), artifact_dir, task, ctx, self.name)
