"""ptuning: P-tuning (peft PromptEncoderConfig): an MLP/LSTM encodes the virtual-token embeddings."""

from __future__ import annotations

from pathlib import Path

from peft import PromptEncoderConfig, TaskType

from lmadapt.data.task import Task
from lmadapt.methods.base import RunContext, TaskModelAdapted
from lmadapt.methods.peft_common.build import fit_peft, load_peft
from lmadapt.methods.ptuning.config import PtuningMethodConfig
from lmadapt.models.task_model import TaskModel
from lmadapt.train.loop import TrainResult


def ptuning_config(cfg: PtuningMethodConfig, tm: TaskModel, task_type: TaskType) -> PromptEncoderConfig:
    return PromptEncoderConfig(task_type=task_type, num_virtual_tokens=cfg.ptuning_virtual_tokens,
                               encoder_reparameterization_type=cfg.ptuning_encoder,
                               encoder_hidden_size=cfg.ptuning_hidden)


class Ptuning:
    name = "ptuning"
    config_class = PtuningMethodConfig
    summary = "P-tuning: virtual tokens from a trained prompt encoder (peft)"

    def fit(self, train: Task, eval_task: Task | None, cfg: PtuningMethodConfig,
            ctx: RunContext) -> tuple[TaskModelAdapted, TrainResult]:
        return fit_peft(self.name, train, eval_task, ctx, lambda tm, tt: ptuning_config(cfg, tm, tt),
                        cfg.ptuning_default_lr)

    def load(self, artifact_dir: Path, task: Task, cfg: PtuningMethodConfig, ctx: RunContext) -> TaskModelAdapted:
        return load_peft(self.name, artifact_dir, task, ctx)
