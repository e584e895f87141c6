"""zero-shot: the prompt template alone; labels scored by log-likelihood, nothing trained."""

from __future__ import annotations

from pathlib import Path

from lmadapt.data.task import Task
from lmadapt.methods.base import RunContext, TaskModelAdapted, fitted, task_model_for
from lmadapt.methods.zero_shot.config import ZeroShotConfig


class ZeroShot:
    name = "zero-shot"
    config_class = ZeroShotConfig
    summary = "prompt template only; no training"
    model_kinds = ("causal", "seq2seq")
    task_kinds = ("classification", "generation")
    trains = False

    def fit(self, train: Task, eval_task: Task | None, cfg: ZeroShotConfig,
            ctx: RunContext) -> tuple[TaskModelAdapted, None]:
        tm = task_model_for(train, ctx, need=self.model_kinds, method=self.name)
        adapted = fitted(tm)
        adapted.trainable_params = 0
        return adapted, None

    def load(self, artifact_dir: Path, task: Task, cfg: ZeroShotConfig,
             ctx: RunContext) -> TaskModelAdapted:
        return self.fit(task, None, cfg, ctx)[0]
