"""prompt: prompt tuning (peft PromptTuningConfig), optionally initialised from a text (Lester §3.2)."""

from __future__ import annotations

from pathlib import Path

from peft import PromptTuningConfig, PromptTuningInit, TaskType

from lmadapt.data.task import Task
from lmadapt.methods.base import RunContext, TaskModelAdapted
from lmadapt.methods.peft_common.build import fit_peft, load_peft
from lmadapt.methods.prompt.config import PromptMethodConfig
from lmadapt.models.task_model import TaskModel
from lmadapt.train.loop import TrainResult


def prompt_config(cfg: PromptMethodConfig, tm: TaskModel, task_type: TaskType) -> PromptTuningConfig:
    if not cfg.prompt_init_text:
        return PromptTuningConfig(task_type=task_type, num_virtual_tokens=cfg.prompt_virtual_tokens,
                                  prompt_tuning_init=PromptTuningInit.RANDOM)
    return PromptTuningConfig(task_type=task_type, num_virtual_tokens=cfg.prompt_virtual_tokens,
                              prompt_tuning_init=PromptTuningInit.TEXT,
                              prompt_tuning_init_text=cfg.prompt_init_text, tokenizer_name_or_path=tm.ref)


class Prompt:
    name = "prompt"
    config_class = PromptMethodConfig
    summary = "prompt tuning: trained virtual-token embeddings before the input (peft)"

    def fit(self, train: Task, eval_task: Task | None, cfg: PromptMethodConfig,
            ctx: RunContext) -> tuple[TaskModelAdapted, TrainResult]:
        return fit_peft(self.name, train, eval_task, ctx, lambda tm, tt: prompt_config(cfg, tm, tt),
                        cfg.prompt_default_lr)

    def load(self, artifact_dir: Path, task: Task, cfg: PromptMethodConfig, ctx: RunContext) -> TaskModelAdapted:
        return load_peft(self.name, artifact_dir, task, ctx)
