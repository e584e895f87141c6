"""lora: low-rank updates on the attention projections (peft LoraConfig); mergeable."""

from __future__ import annotations

from peft import LoraConfig, TaskType

from lmadapt.methods.lora.config import LoraMethodConfig
from lmadapt.methods.peft_common.build import PeftMethod
from lmadapt.methods.peft_common.targets import qv_targets
from lmadapt.models.task_model import TaskModel


def lora_config(cfg: LoraMethodConfig, tm: TaskModel, task_type: TaskType) -> LoraConfig:
    targets = list(cfg.lora_target_modules) or qv_targets(tm.model)
    return LoraConfig(task_type=task_type, r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                      lora_dropout=cfg.lora_dropout, target_modules=targets, bias="none")


class Lora(PeftMethod):
    name = "lora"
    config_class = LoraMethodConfig
    summary = "low-rank updates B·A on query/value projections (peft); merges into the weights"
    default_lr_field = "lora_default_lr"
    lr_range = (1e-4, 5e-3)  # learning rates a search tries (log scale)
    mergeable = True
    peft_config = staticmethod(lora_config)
