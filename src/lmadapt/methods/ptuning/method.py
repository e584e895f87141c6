"""ptuning: P-tuning (peft PromptEncoderConfig): an MLP/LSTM encodes the virtual-token embeddings."""

from __future__ import annotations

from peft import PromptEncoderConfig, TaskType

from lmadapt.methods.peft_common.build import PeftMethod
from lmadapt.methods.ptuning.config import PtuningMethodConfig
from lmadapt.models.task_model import TaskModel


def ptuning_config(cfg: PtuningMethodConfig, tm: TaskModel, task_type: TaskType) -> PromptEncoderConfig:
    return PromptEncoderConfig(task_type=task_type, num_virtual_tokens=cfg.ptuning_virtual_tokens,
                               encoder_reparameterization_type=cfg.ptuning_encoder,
                               encoder_hidden_size=cfg.ptuning_hidden)


class Ptuning(PeftMethod):
    name = "ptuning"
    config_class = PtuningMethodConfig
    summary = "P-tuning: virtual tokens from a trained prompt encoder (peft)"
    default_lr_field = "ptuning_default_lr"
    lr_range = (1e-3, 3e-2)  # learning rates a search tries (log scale)
    merge_note = "P-tuning adds virtual input tokens, not a weight update"
    peft_config = staticmethod(ptuning_config)
