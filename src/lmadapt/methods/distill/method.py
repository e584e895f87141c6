"""distill: Distilling Step-by-Step (Hsieh et al., 2023) — a student learns the label and the
teacher's rationale as two prefixed tasks (loss in `loss.py`, Eq. 3); only the label task runs at
inference. The student is fully fine-tuned or wrapped by a peft method (`student.py`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lmadapt.data.task import Example, Task
from lmadapt.eval.arith import equation_match
from lmadapt.eval.metrics import bootstrap_mean_ci, normalize_answer
from lmadapt.methods.base import RunContext, TaskModelAdapted, task_model_for, with_default_lr
from lmadapt.methods.distill.config import DistillConfig
from lmadapt.methods.distill.data import RationaleExample, maybe_rationale_task, rationale_examples
from lmadapt.methods.distill.loss import DistillLoss
from lmadapt.methods.distill.student import load_student, make_student
from lmadapt.models.load import count_params
from lmadapt.models.task_model import TaskModel
from lmadapt.train.loop import TrainResult, train

KINDS = ("causal", "seq2seq")


def answer_correct(prediction: str, example: Example) -> bool:
    """Equation labels by value (|Δ| <= 1e-4), choice / NLI / text labels by normalised text."""
    if getattr(example, "style", "") == "equation":
        return equation_match(prediction, example.target)
    return normalize_answer(prediction) == normalize_answer(example.target)


def score_answers(predictions: list[str], examples: list[Example], seed: int = 0) -> dict[str, Any]:
    """The task's metric (equation_accuracy or accuracy) with a bootstrap 95% CI."""
    correct = np.array([answer_correct(p, ex) for p, ex in zip(predictions, examples, strict=True)], dtype=float)
    low, high = bootstrap_mean_ci(correct, seed=seed)
    style = getattr(examples[0], "style", "text") if examples else "text"
    return {"metric": "equation_accuracy" if style == "equation" else "accuracy",
            "score": float(correct.mean()) if len(correct) else 0.0, "ci_low": low, "ci_high": high,
            "per_example": correct.tolist()}


class DistillAdapted(TaskModelAdapted):
    """A trained student; `predict` runs the label task only ("[label] " + input → label)."""

    def evaluate(self, task: Task, seed: int = 0, batch_size: int = 32) -> tuple[list[str], dict[str, Any]]:
        """Label-task predictions scored by the task's own metric (SVAMP: answers by value)."""
        predictions = self.predict(task.texts(), batch_size)
        return predictions, score_answers(predictions, task.examples, seed)


def _adapted(tm: TaskModel, save_fn: Any) -> DistillAdapted:
    trainable, total = count_params(tm.model)
    return DistillAdapted(tm=tm, save_fn=save_fn, trainable_params=trainable, total_params=total)


def distill_loss(tm: TaskModel, cfg: DistillConfig) -> DistillLoss:
    """The loss object; also points tm's prompts at the label task (what inference uses)."""
    loss = DistillLoss(tm=tm, alpha=cfg.distill_alpha, label_prefix=cfg.distill_label_prefix,
                       rationale_prefix=cfg.distill_rationale_prefix, label_source=cfg.distill_label_source,
                       rationale_max_tokens=cfg.distill_rationale_max_tokens)
    tm.prompt_builder = loss.label_prompt
    return loss


class Distill:
    name = "distill"
    config_class = DistillConfig
    summary = "distilling step-by-step: label + teacher-rationale multi-task student (full or peft)"
    model_kinds = KINDS
    task_kinds = ("rationale",)
    trains = True
    lr_range = (1e-5, 3e-3)  # learning rates a search tries (log scale)
    demo_note = "needs teacher rationales (docs/distill.md)"
    load_task = staticmethod(maybe_rationale_task)  # DIR:SPLIT release folders, rationale JSONL

    def fit(self, train_task: Task, eval_task: Task | None, cfg: DistillConfig,
            ctx: RunContext) -> tuple[DistillAdapted, TrainResult]:
        examples = rationale_examples(train_task)
        tm = task_model_for(train_task, ctx, need=KINDS, method=self.name)
        loss = distill_loss(tm, cfg)
        save_fn, student_lr = make_student(tm, cfg.distill_student, cfg.distill_student_args, ctx.train.seed)
        adapted = _adapted(tm, save_fn)
        train_cfg = with_default_lr(ctx.train, cfg.distill_default_lr or student_lr)
        eval_fn = None
        if eval_task is not None and (train_cfg.eval_each_epoch or train_cfg.early_stop_patience > 0):
            def eval_fn(epoch: int) -> dict:
                predictions = tm.predict(eval_task.texts(), train_cfg.eval_batch_size)
                return {"score": score_answers(predictions, eval_task.examples)["score"]}
        result = train(loss, examples, train_cfg, ctx.work_dir, eval_fn)
        return adapted, result

    def load(self, artifact_dir: Path, task: Task, cfg: DistillConfig, ctx: RunContext) -> DistillAdapted:
        tm, save_fn = load_student(Path(artifact_dir), cfg.distill_student, task, ctx)
        distill_loss(tm, cfg)
        return _adapted(tm, save_fn)


__all__ = ["Distill", "DistillAdapted", "RationaleExample", "answer_correct", "score_answers"]
