"""What a method is: a config dataclass, `fit` and `load`. The registry lives in __init__.py.

A method never runs its own training loop: trainable methods pick parameters (or wrap modules)
on a `TaskModel` and call `train.loop.train`, which uses the task model's loss.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from safetensors.torch import load_file, save_file

from lmadapt.data.task import KINDS, Task
from lmadapt.errors import LmadaptError
from lmadapt.models.load import ModelSpec, count_params
from lmadapt.models.task_model import TaskModel, build_task_model
from lmadapt.train.checkpoint import trainable_state
from lmadapt.train.config import TrainConfig
from lmadapt.train.loop import TrainResult, train
from lmadapt.utils import seed_everything


@dataclass
class RunContext:
    """What every method gets besides its own config and the task."""

    model: ModelSpec
    train: TrainConfig
    work_dir: Path  # the run's working folder; checkpoints go under it


MODEL_KINDS = ("encoder", "causal", "seq2seq")
TASK_KINDS = KINDS  # classification | generation | preferences | prompts | rationale (data/task.py)


class Adapted:
    """A fitted method: predicts, saves itself, reports its parameter counts. `run` uses exactly
    these members; `evaluate` and `figures` have defaults a method may override."""

    trainable_params: int = 0
    total_params: int = 0

    def predict(self, texts: list[str], batch_size: int = 16) -> list[str]:
        """A label (classification) or an output text (generation) per input."""
        raise NotImplementedError  # every Adapted defines it

    def save(self, artifact_dir: Path) -> None:
        raise NotImplementedError  # every Adapted defines it

    def evaluate(self, task: Task, seed: int = 0, batch_size: int = 32) -> tuple[list[str], dict[str, Any]]:
        """Predictions for task and their scores (metric, score, 95% CI, ...). By default: predict,
        then match against the targets; a method scored otherwise (a reward, an answer checker)
        overrides this."""
        from lmadapt.eval.metrics import score_predictions

        predictions = self.predict(task.texts(), batch_size)
        return predictions, score_predictions(predictions, task.targets(), task.kind, seed, task.metric)

    def figures(self, task: Task) -> dict[str, Any]:
        """Extra method figures for the run record (retrieval recall, KL, ...)."""
        return {}

    def use_reward(self, ref: str) -> bool:
        """Score with the reward `ref` (`lmadapt eval --reward`); False when this model is not
        scored by a reward (only policies are)."""
        return False


class Method(Protocol):
    """What a method declares (class attributes, checked once by `run.tune` and at registration)
    and does. Nothing outside the method's folder keys on its name."""

    name: ClassVar[str]
    config_class: ClassVar[type]
    summary: ClassVar[str]
    model_kinds: ClassVar[tuple[str, ...]]  # of MODEL_KINDS: the models it can use
    task_kinds: ClassVar[tuple[str, ...]]  # of TASK_KINDS: the tasks it can learn
    trains: ClassVar[bool]  # whether fit updates weights (uses the training loop)
    mergeable: ClassVar[bool]  # `lmadapt merge` folds its artifact into the base weights
    merge_note: ClassVar[str]  # why not, when it is not mergeable (shown by `lmadapt merge`)
    demo_note: ClassVar[str]  # non-empty: left out of `lmadapt demo`, and why
    # (low, high): the learning rates (train setting lr) a compare's search tries, on a log
    # scale; None for a method that does not train, or whose learning rate is its own setting
    lr_range: ClassVar[tuple[float, float] | None]
    # optional `default_lr(cfg) -> float | None`: the learning rate a run with lr=0 uses, when it is
    # not simply the config's one `*_default_lr` field (see `default_lr`); a search tries it first

    def fit(self, train: Task, eval_task: Task | None, cfg: Any, ctx: RunContext
            ) -> tuple[Adapted, TrainResult | None]: ...

    def load(self, artifact_dir: Path, task: Task, cfg: Any, ctx: RunContext) -> Adapted: ...


GENERATIVE = ("generation", "rationale")  # task kinds whose answers are generated (no encoder)
KIND_PHRASES = {"classification": "a classification task", "generation": "a generation task",
                "preferences": "a task of preference pairs", "prompts": "a task of prompts",
                "rationale": "a rationale task"}

# Optional on a method class: `load_task(ref, spec, name) -> Task | None` reads a data layout of
# the method's own (None when ref is not one), tried before the generic loaders.
# A method's own commands (`lmadapt NAME ...`, given lmadapt.cli.Services as ctx.obj for running
# a tune) are named on its registry line (methods/__init__.py): the CLI lists them without torch.
OPTIONAL = {"mergeable": False, "merge_note": "it has no adapter weights", "demo_note": "", "load_task": None,
            "lr_range": None}
REQUIRED = ("name", "config_class", "summary", "model_kinds", "task_kinds", "trains", "fit", "load")


def check_declaration(cls: type) -> None:
    """A registered method declares what it can do; a wrong declaration fails at import time."""
    missing = [a for a in REQUIRED if not hasattr(cls, a)]
    if missing:
        raise TypeError(f"method class {cls.__name__} does not declare {', '.join(missing)}")
    bad_models = [k for k in cls.model_kinds if k not in MODEL_KINDS]
    bad_tasks = [k for k in cls.task_kinds if k not in TASK_KINDS]
    if bad_models or bad_tasks or not cls.model_kinds or not cls.task_kinds:
        raise TypeError(f"method {cls.name}: model_kinds must be a non-empty subset of {MODEL_KINDS} and "
                        f"task_kinds of {TASK_KINDS}")
    for attr, default in OPTIONAL.items():
        if not hasattr(cls, attr):
            setattr(cls, attr, default)
    low_high = cls.lr_range
    if low_high is not None and not (len(low_high) == 2 and 0 < low_high[0] < low_high[1] and cls.trains):
        raise TypeError(f"method {cls.name}: lr_range must be (low, high) with 0 < low < high, on a method that trains")


def accepts_task(method: Method, kind: str) -> bool:
    """Whether method can learn a task of this kind. A rationale task (input, label, rationale)
    is also a generation task (input → label) for methods that take generation."""
    return kind in method.task_kinds or (kind == "rationale" and "generation" in method.task_kinds)


def capability_gap(method: Method, task: Task, model: ModelSpec) -> str | None:
    """Why method cannot serve this task or model, as one phrase ("needs a classification task,
    not a generation task"); None when it can. From the declarations only (the model's config
    is read for its kind; a model that cannot be found is an error, not a gap)."""
    if not accepts_task(method, task.kind):
        wanted = " or ".join(KIND_PHRASES[k] for k in method.task_kinds)
        return f"needs {wanted}, not {KIND_PHRASES[task.kind]}"
    from lmadapt.models.load import load_config, model_kind, resolve_model_ref

    kind = model_kind(load_config(resolve_model_ref(model.model), model.trust_remote_code))
    if kind not in method.model_kinds:
        return f"cannot use {kind} model {model.model!r}; it needs a {' or '.join(method.model_kinds)} model"
    if kind == "encoder" and task.kind in GENERATIVE:
        return (f"cannot use model {model.model!r} for {KIND_PHRASES[task.kind]}: it is an encoder and cannot "
                "generate; use a causal LM or seq2seq model")
    return None


def check_capabilities(method: Method, task: Task, model: ModelSpec) -> None:
    """One-line errors, before any work, when method cannot use this task or model."""
    gap = capability_gap(method, task, model)
    if gap is not None:
        raise LmadaptError(f"method {method.name!r} {gap} (see `lmadapt methods`)")


@dataclass
class TaskModelAdapted(Adapted):
    """An adapted TaskModel; `save_fn(tm, dir)` writes the method's artifact."""

    tm: TaskModel
    save_fn: Any = field(repr=False, default=None)
    trainable_params: int = 0
    total_params: int = 0

    def predict(self, texts: list[str], batch_size: int = 16) -> list[str]:
        return self.tm.predict(texts, batch_size)

    @torch.inference_mode()
    def scores(self, texts: list[str]) -> torch.Tensor:
        """(N, L) label log-likelihoods (classification tasks); argmax is the prediction."""
        self.tm.model.eval()
        return self.tm.label_scores(texts)

    def save(self, artifact_dir: Path) -> None:
        artifact_dir.mkdir(parents=True, exist_ok=True)
        if self.save_fn is not None:
            self.save_fn(self.tm, artifact_dir)


def task_model_for(task: Task, ctx: RunContext, need: tuple[str, ...] = ("encoder", "causal", "seq2seq"),
                   method: str = "") -> TaskModel:
    """Load ctx.model for task; error in one line when the method cannot use that model kind.

    Seeds first, so new weights (e.g. a classifier head) start the same in every run.
    """
    seed_everything(ctx.train.seed)
    tm = build_task_model(ctx.model, task, ctx.train.max_length, ctx.train.max_new_tokens,
                          ctx.train.normalize_scores)
    if tm.kind not in need:
        raise LmadaptError(f"method {method!r} cannot use {tm.kind} model {ctx.model.model!r}; "
                           f"it needs a {' or '.join(need)} model")
    return tm


def default_lr(method: Any, cfg: Any) -> float | None:
    """The learning rate `method` trains with when the train setting lr is 0: its own
    `default_lr(cfg)` if it declares one, else its config's single `*_default_lr` field (None when
    neither says, or the field is 0 = decided elsewhere)."""
    if callable(own := getattr(method, "default_lr", None)):
        return own(cfg)
    names = [f.name for f in fields(cfg) if f.name.endswith("_default_lr")]
    value = getattr(cfg, names[0]) if len(names) == 1 else None
    return float(value) if value else None


def with_default_lr(cfg: TrainConfig, lr: float) -> TrainConfig:
    return cfg if cfg.lr > 0 else replace(cfg, lr=lr)


def train_task_model(tm: TaskModel, train_task: Task, eval_task: Task | None, ctx: RunContext,
                     default_lr: float, lr_overrides: dict[int, float] | None = None) -> TrainResult:
    """Run the shared loop on tm's trainable parameters, scoring eval_task after each epoch."""
    train_task.check_trainable()
    cfg = with_default_lr(ctx.train, default_lr)
    eval_fn = None
    if eval_task is not None and (cfg.eval_each_epoch or cfg.early_stop_patience > 0):
        from lmadapt.eval.metrics import score_predictions

        def eval_fn(epoch: int) -> dict:
            preds = tm.predict(eval_task.texts(), cfg.eval_batch_size)
            scored = score_predictions(preds, eval_task.targets(), eval_task.kind, cfg.seed, eval_task.metric)
            return {"score": scored["score"]}
    return train(tm, train_task.examples, cfg, ctx.work_dir, eval_fn, lr_overrides=lr_overrides)


def fit_built(build: Any, train: Task, eval_task: Task | None, ctx: RunContext, method: str,
              default_lr: float) -> tuple[TaskModelAdapted, TrainResult]:
    """Load the task model, `build(tm)` (freeze / wrap modules, seeded), train; the artifact is
    the trained tensors (`trained.safetensors`)."""
    tm = task_model_for(train, ctx, method=method)
    seed_everything(ctx.train.seed)  # modules added by build start the same in every run
    build(tm)
    adapted = fitted(tm, save_trainable)
    return adapted, train_task_model(tm, train, eval_task, ctx, default_lr)


def load_built(build: Any, artifact_dir: Path, task: Task, ctx: RunContext, method: str) -> TaskModelAdapted:
    """The inverse of fit_built: the same build on a fresh task model, then the trained tensors."""
    tm = task_model_for(task, ctx, method=method)
    build(tm)
    load_trainable(tm, artifact_dir)
    tm.model.eval()
    return fitted(tm, save_trainable)


def fitted(tm: TaskModel, save_fn: Any = None) -> TaskModelAdapted:
    trainable, total = count_params(tm.model)
    return TaskModelAdapted(tm=tm, save_fn=save_fn, trainable_params=trainable, total_params=total)


def save_trainable(tm: TaskModel, artifact_dir: Path) -> None:
    """Write only the trained tensors (e.g. a head) as safetensors."""
    save_file(trainable_state(tm.model), artifact_dir / "trained.safetensors")


def load_trainable(tm: TaskModel, artifact_dir: Path) -> None:
    """Copy tensors written by save_trainable into tm.model (names must all exist)."""
    weights = load_file(artifact_dir / "trained.safetensors")
    params = dict(tm.model.named_parameters())
    unknown = [n for n in weights if n not in params]
    if unknown:
        raise LmadaptError(f"{artifact_dir}: tensor {unknown[0]!r} does not exist in the base model; "
                           "was the run made with another model?")
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor.to(params[name].device, params[name].dtype))


def config_to_json(cfg: Any) -> dict:
    return json.loads(json.dumps(asdict(cfg), default=str))
