"""unipelt: gated LoRA + prefix + adapter (Mao et al., 2022); base frozen, encoder head trains."""

from __future__ import annotations

from pathlib import Path

from lmadapt.data.task import Task
from lmadapt.methods.adapter.method import freeze_all_but_head
from lmadapt.methods.base import (
    RunContext,
    TaskModelAdapted,
    fitted,
    load_trainable,
    save_trainable,
    task_model_for,
    train_task_model,
)
from lmadapt.methods.unipelt.config import UnipeltMethodConfig
from lmadapt.methods.unipelt.model import add_unipelt
from lmadapt.train.loop import TrainResult
from lmadapt.utils import seed_everything


class Unipelt:
    name = "unipelt"
    config_class = UnipeltMethodConfig
    summary = "UniPELT: LoRA + prefix + adapter, each behind a learned gate"

    def fit(self, train: Task, eval_task: Task | None, cfg: UnipeltMethodConfig,
            ctx: RunContext) -> tuple[TaskModelAdapted, TrainResult]:
        tm = task_model_for(train, ctx, method=self.name)
        seed_everything(ctx.train.seed)
        freeze_all_but_head(tm)
        add_unipelt(tm.model, cfg)
        adapted = fitted(tm, save_trainable)
        return adapted, train_task_model(tm, train, eval_task, ctx, cfg.unipelt_default_lr)

    def load(self, artifact_dir: Path, task: Task, cfg: UnipeltMethodConfig, ctx: RunContext) -> TaskModelAdapted:
        tm = task_model_for(task, ctx, method=self.name)
        freeze_all_but_head(tm)
        add_unipelt(tm.model, cfg)
        load_trainable(tm, artifact_dir)
        tm.model.eval()
        return fitted(tm, save_trainable)
