"""lora: low-rank updates on the attention projections (peft LoraConfig); mergeable."""

from __future__ import annotations

from pathlib import Path

from peft import LoraConfig, TaskType

from lmadapt.data.task import Task
from lmadapt.methods.base import RunContext, TaskModelAdapted
from lmadapt.methods.lora.config import LoraMethodConfig
from lmadapt.methods.peft_common.build import fit_peft, load_peft
from lmadapt.methods.peft_common.targets import qv_targets
from lmadapt.models.task_model import TaskModel
from lmadapt.train.loop import TrainResult


def lora_config(cfg: LoraMethodConfig, tm: TaskModel, task_type: TaskType) -> LoraConfig:
    targets = list(cfg.lora_target_modules) or qv_targets(tm.model)
    return LoraConfig(task_type=task_type, r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                      lora_dropout=cfg.lora_dropout, target_modules=targets, bias="none")


class Lora:
    name = "lora"
    config_class = LoraMethodConfig
    summary = "low-rank updates B·A on query/value projections (peft); merges into the weights"

    def fit(self, train: Task, eval_task: Task | None, cfg: LoraMethodConfig,
            ctx: RunContext) -> tuple[TaskModelAdapted, TrainResult]:
        return fit_peft(self.name, train, eval_task, ctx, lambda tm, tt: lora_config(cfg, tm, tt),
                        cfg.lora_default_lr)

    def load(self, artifact_dir: Path, task: Task, cfg: LoraMethodConfig, ctx: RunContext) -> TaskModelAdapted:
        return load_peft(self.name, artifact_dir, task, ctx)
