"""ia3: (IA)³ rescaling vectors l_k, l_v, l_ff (peft IA3Config); mergeable.

Paper (Liu et al., 2022, §3.3): softmax(Q (l_k ⊙ K)^T / √d) (l_v ⊙ V) and (l_ff ⊙ γ(W_1 x)) W_2;
peft scales the *output* of the K and V projections and the *input* of W_2 (feedforward_modules).
"""

from __future__ import annotations

from pathlib import Path

from peft import IA3Config, TaskType

from lmadapt.data.task import Task
from lmadapt.errors import LmadaptError
from lmadapt.methods.base import RunContext, TaskModelAdapted
from lmadapt.methods.ia3.config import IA3MethodConfig
from lmadapt.methods.peft_common.build import fit_peft, load_peft
from lmadapt.methods.peft_common.targets import ia3_targets
from lmadapt.models.task_model import TaskModel
from lmadapt.train.loop import TrainResult


def ia3_config(cfg: IA3MethodConfig, tm: TaskModel, task_type: TaskType) -> IA3Config:
    if cfg.ia3_target_modules:
        targets: str | list[str] = list(cfg.ia3_target_modules)
        feedforward: str | list[str] = list(cfg.ia3_feedforward_modules)
        if not set(feedforward) <= set(targets):
            raise LmadaptError("ia3_feedforward_modules must be a subset of ia3_target_modules")
    else:
        targets, feedforward = ia3_targets(tm.model)
    return IA3Config(task_type=task_type, target_modules=targets, feedforward_modules=feedforward)


class IA3:
    name = "ia3"
    config_class = IA3MethodConfig
    summary = "(IA)³: learned scaling of keys, values and FFN activations (peft); merges into the weights"

    def fit(self, train: Task, eval_task: Task | None, cfg: IA3MethodConfig,
            ctx: RunContext) -> tuple[TaskModelAdapted, TrainResult]:
        return fit_peft(self.name, train, eval_task, ctx, lambda tm, tt: ia3_config(cfg, tm, tt),
                        cfg.ia3_default_lr)

    def load(self, artifact_dir: Path, task: Task, cfg: IA3MethodConfig, ctx: RunContext) -> TaskModelAdapted:
        return load_peft(self.name, artifact_dir, task, ctx)
