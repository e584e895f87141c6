"""ia3: (IA)³ rescaling vectors l_k, l_v, l_ff (peft IA3Config); mergeable.

Paper (Liu et al., 2022, §3.3): softmax(Q (l_k ⊙ K)^T / √d) (l_v ⊙ V) and (l_ff ⊙ γ(W_1 x)) W_2;
peft scales the *output* of the K and V projections and the *input* of W_2 (feedforward_modules).
"""

from __future__ import annotations

from peft import IA3Config, TaskType

from lmadapt.errors import LmadaptError
from lmadapt.methods.ia3.config import IA3MethodConfig
from lmadapt.methods.peft_common.build import PeftMethod
from lmadapt.methods.peft_common.targets import ia3_targets
from lmadapt.models.task_model import TaskModel


def ia3_config(cfg: IA3MethodConfig, tm: TaskModel, task_type: TaskType) -> IA3Config:
    if cfg.ia3_target_modules:
        targets: str | list[str] = list(cfg.ia3_target_modules)
        feedforward: str | list[str] = list(cfg.ia3_feedforward_modules)
        if not set(feedforward) <= set(targets):
            raise LmadaptError("ia3_feedforward_modules must be a subset of ia3_target_modules")
    else:
        targets, feedforward = ia3_targets(tm.model)
    return IA3Config(task_type=task_type, target_modules=targets, feedforward_modules=feedforward)


class IA3(PeftMethod):
    name = "ia3"
    config_class = IA3MethodConfig
    summary = "(IA)³: learned scaling of keys, values and FFN activations (peft); merges into the weights"
    default_lr_field = "ia3_default_lr"
    lr_range = (1e-3, 3e-2)  # learning rates a search tries (log scale)
    mergeable = True
    peft_config = staticmethod(ia3_config)
