"""prompt: prompt tuning (peft PromptTuningConfig), optionally initialised from a text (Lester §3.2)."""

from __future__ import annotations

from peft import PromptTuningConfig, PromptTuningInit, TaskType

from lmadapt.methods.peft_common.build import PeftMethod
from lmadapt.methods.prompt.config import PromptMethodConfig
from lmadapt.models.task_model import TaskModel


def prompt_config(cfg: PromptMethodConfig, tm: TaskModel, task_type: TaskType) -> PromptTuningConfig:
    if not cfg.prompt_init_text:
        return PromptTuningConfig(task_type=task_type, num_virtual_tokens=cfg.prompt_virtual_tokens,
                                  prompt_tuning_init=PromptTuningInit.RANDOM)
    return PromptTuningConfig(task_type=task_type, num_virtual_tokens=cfg.prompt_virtual_tokens,
                              prompt_tuning_init=PromptTuningInit.TEXT,
                              prompt_tuning_init_text=cfg.prompt_init_text, tokenizer_name_or_path=tm.ref)


class Prompt(PeftMethod):
    name = "prompt"
    config_class = PromptMethodConfig
    summary = "prompt tuning: trained virtual-token embeddings before the input (peft)"
    default_lr_field = "prompt_default_lr"
    lr_range = (3e-3, 1e-1)  # learning rates a search tries (log scale)
    merge_note = "prompt tuning adds virtual input tokens, not a weight update"
    peft_config = staticmethod(prompt_config)
