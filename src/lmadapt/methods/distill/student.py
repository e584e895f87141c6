"""The student's parameterisation: full fine-tuning or a peft method (lora, ia3, prefix, ...).

The student method's own config class and peft-config builder are reused, so
`distill_student=lora distill_student_args=lora_r=16` means exactly what `lora lora_r=16` means.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from peft import PeftModel, get_peft_model

from lmadapt.config import build_configs, parse_overrides
from lmadapt.errors import LmadaptError
from lmadapt.methods.base import RunContext, task_model_for
from lmadapt.methods.peft_common.build import (
    ADAPTER_DIR,
    PEFT_METHODS,
    TASK_TYPES,
    install_prompt_hooks,
    save_adapter,
)
from lmadapt.models.task_model import TaskModel
from lmadapt.utils import seed_everything

FULL_DEFAULT_LR = 5e-5
SaveFn = Callable[[TaskModel, Path], None]


def save_full(tm: TaskModel, artifact_dir: Path) -> None:
    """A plain HF model folder at artifact_dir/model."""
    tm.model.save_pretrained(artifact_dir / "model", safe_serialization=True)
    tm.tokenizer.save_pretrained(artifact_dir / "model")


def student_config(student: str, args: tuple[str, ...]) -> object:
    """The student method's config from key=value strings (validated by its dataclass)."""
    config_class = PEFT_METHODS[student].config_class
    return build_configs([config_class], parse_overrides(list(args)))[config_class]


def make_student(tm: TaskModel, student: str, args: tuple[str, ...], seed: int) -> tuple[SaveFn, float]:
    """Pick tm's trainable parameters (full) or wrap tm.model with a peft method.

    Returns (save function, the student's default learning rate).
    """
    if student == "full":
        if args:
            raise LmadaptError("distill_student=full takes no distill_student_args")
        tm.model.requires_grad_(True)
        return save_full, FULL_DEFAULT_LR
    method = PEFT_METHODS[student]()
    cfg = student_config(student, args)
    seed_everything(seed)  # adapter initialisation is part of the run's seed
    try:
        tm.model = get_peft_model(tm.model, method.peft_config(cfg, tm, TASK_TYPES[tm.kind]))
    except ValueError as err:
        raise LmadaptError(f"distill student {student}: {str(err).splitlines()[0][:200]}") from None
    install_prompt_hooks(tm.model, tm.kind)
    return save_adapter, float(getattr(cfg, method.default_lr_field))


def load_student(artifact_dir: Path, student: str, task: object, ctx: RunContext) -> tuple[TaskModel, SaveFn]:
    """Rebuild a trained student from artifact_dir (model/ for full, adapter/ for peft)."""
    if student == "full":
        local = replace(ctx, model=replace(ctx.model, model=str(artifact_dir / "model")))
        return task_model_for(task, local, need=("causal", "seq2seq"), method="distill"), save_full
    folder = artifact_dir / ADAPTER_DIR
    if not (folder / "adapter_config.json").exists():
        raise LmadaptError(f"{folder} has no adapter_config.json; is this a distill run folder?")
    tm = task_model_for(task, ctx, need=("causal", "seq2seq"), method="distill")
    tm.model = PeftModel.from_pretrained(tm.model, str(folder), is_trainable=False)
    install_prompt_hooks(tm.model, tm.kind)
    tm.model.eval()
    return tm, save_adapter
