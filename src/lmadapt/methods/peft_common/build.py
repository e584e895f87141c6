"""Fit and load a peft-backed method on a TaskModel; the artifact is an ordinary PEFT folder.

`artifact/adapter/` is what `model.save_pretrained` writes (adapter_config.json +
adapter_model.safetensors, with the classifier head under modules_to_save for encoders), so
`peft.PeftModel.from_pretrained(base, "artifact/adapter")` loads it without lmadapt.

Encoders: the head trains in full beside the adapter, as peft's `modules_to_save` — the
classifier and, for BERT-style models, the pooler that feeds it (the same modules the `head`
method trains). Sentence-transformers checkpoints such as MiniLM pool by mean and never trained
that pooler; frozen, it leaves the adapter too little to work with.

Prompt-learning methods (prompt, ptuning) on causal LMs get two hooks, installed here and
nowhere else, so the TaskModel's left-padded batches work unchanged:
- peft drops `position_ids` for prompt/p-tuning (it prepends virtual-token embeddings); a
  pre-hook on the HF model rebuilds them from the extended attention mask, so each row's real
  tokens sit at positions n_virtual, n_virtual+1, ... whatever its padding;
- peft returns logits for the virtual tokens too, (B, n_virtual + T, V); a hook on the
  PeftModel keeps the last T, so label scoring lines up with input_ids.
Prefix tuning needs neither: peft offsets the given position_ids by n_virtual itself.

Generation with a KV cache (HF `generate`, lmadapt.decoding): peft 0.21 looks for the cache
under `past_key_values`, transformers 5 passes it as `cache`, so peft injects its prompt at
every step — prefix tuning's key/values arrive beside the real cache and are ignored (the
model generates as if untuned), and prompt/p-tuning's virtual tokens are fed again with each
new token. Two pre-hooks on the HF model make cached steps match the uncached forward:
prefix key/values go into the (empty) cache at the first step and are dropped afterwards, and
re-fed virtual tokens are cut once the cache holds them.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from peft import PeftConfig, PeftModel, TaskType, get_peft_model

from lmadapt.data.task import Task
from lmadapt.decoding.engine import position_ids_for
from lmadapt.decoding.sources import cache_kwarg
from lmadapt.errors import LmadaptError
from lmadapt.methods.base import (
    RunContext,
    TaskModelAdapted,
    fitted,
    task_model_for,
    train_task_model,
)
from lmadapt.models.task_model import TaskModel
from lmadapt.train.loop import TrainResult
from lmadapt.utils import atomic_write_text, seed_everything

ADAPTER_DIR = "adapter"
LABELS_FILE = "labels.json"  # an encoder classifier's label names, beside its adapter
TASK_TYPES = {"encoder": TaskType.SEQ_CLS, "causal": TaskType.CAUSAL_LM, "seq2seq": TaskType.SEQ_2_SEQ_LM}

# peft warns on every batch that it ignores position/token-type ids for prompt learning;
# the hooks below handle positions, and BERT-style token types are all zero for one segment.
warnings.filterwarnings("ignore", message="Position ids are not supported")
warnings.filterwarnings("ignore", message="Token type ids are not supported")

PeftConfigBuilder = Callable[[TaskModel, TaskType], PeftConfig]


def _positions_from_mask(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Forward pre-hook: position_ids from the (virtual-token-extended) attention mask."""
    mask = kwargs.get("attention_mask")
    if kwargs.get("position_ids") is None and mask is not None and mask.dim() == 2:
        embeds = kwargs.get("inputs_embeds")
        ids = kwargs.get("input_ids")
        width = embeds.shape[1] if embeds is not None else ids.shape[1]
        kwargs["position_ids"] = position_ids_for(mask)[:, -width:]  # (B, T)
    return args, kwargs


def _trim_virtual_logits(module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
    """Forward hook: drop the logits of the virtual tokens, (B, P+T, V) → (B, T, V)."""
    ids = kwargs.get("input_ids", args[0] if args else None)
    logits = getattr(output, "logits", None)
    if ids is not None and logits is not None and logits.dim() == 3 and logits.shape[1] > ids.shape[1]:
        output.logits = logits[:, -ids.shape[1]:]
    return output


def _prefix_into_cache(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Forward pre-hook (prefix tuning, transformers 5): peft's prefix key/values, passed as
    `past_key_values`, become the start of the step's `cache` when it is still empty; on later
    steps the cache holds them already and peft's fresh copy is dropped. Without a cache (a
    training forward) the prefix is passed as the cache, under the name transformers 5 takes."""
    prefix, cache = kwargs.get("past_key_values"), kwargs.get("cache")
    if prefix is None or prefix is cache:
        return args, kwargs
    if cache is None:
        kwargs["cache"] = prefix
    elif not cache.get_seq_length():
        for layer_idx, layer in enumerate(prefix.layers):
            cache.update(layer.keys, layer.values, layer_idx)
    return args, {k: v for k, v in kwargs.items() if k != "past_key_values"}


def _virtual_tokens_once(n_virtual: int) -> Callable:
    """Forward pre-hook (prompt/p-tuning): peft prepends the n_virtual prompt embeddings on every
    call; once the cache holds them (any step after the first), cut them from inputs_embeds."""
    def hook(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        cache, embeds = kwargs.get("cache"), kwargs.get("inputs_embeds")
        if cache is not None and embeds is not None and cache.get_seq_length() and embeds.shape[1] > n_virtual:
            kwargs["inputs_embeds"] = embeds[:, n_virtual:]
        return args, kwargs
    return hook


def install_prompt_hooks(model: PeftModel, kind: str) -> None:
    """Make prompt-learning causal LMs accept TaskModel batches and generate with a KV cache
    (see the module docstring)."""
    config = model.active_peft_config
    if kind != "causal" or not config.is_prompt_learning:
        return
    cached_steps = cache_kwarg(model) == "cache"  # transformers 5: peft misses the cache
    if config.peft_type.value == "PREFIX_TUNING":
        if cached_steps:
            model.base_model.register_forward_pre_hook(_prefix_into_cache, with_kwargs=True)
        return
    if cached_steps:  # before the positions hook, so positions cover the tokens that remain
        model.base_model.register_forward_pre_hook(_virtual_tokens_once(config.num_virtual_tokens),
                                                   with_kwargs=True)
    model.base_model.register_forward_pre_hook(_positions_from_mask, with_kwargs=True)
    model.register_forward_hook(_trim_virtual_logits, with_kwargs=True)


def save_adapter(tm: TaskModel, artifact_dir: Path) -> None:
    """Write the PEFT folder artifact_dir/adapter (+ the tokenizer, for convenience; + labels.json
    for an encoder classifier)."""
    folder = artifact_dir / ADAPTER_DIR
    tm.model.save_pretrained(str(folder))
    tm.tokenizer.save_pretrained(str(folder))
    if tm.kind == "encoder" and tm.task.kind == "classification":
        save_labels(tm.model.config, folder)


def save_labels(config: Any, folder: Path) -> None:
    """labels.json: the classifier's num_labels, id2label and label2id, as its config.json would hold
    them. A PEFT folder holds no config.json (with one, transformers' `from_pretrained(folder)` takes
    the folder for a full model and finds no weights), so users pass these to the base model's
    `from_pretrained` (the model card shows how) instead of getting LABEL_0, LABEL_1, ..."""
    id2label = {int(i): str(name) for i, name in config.id2label.items()}
    atomic_write_text(folder / LABELS_FILE, json.dumps({
        "num_labels": len(id2label), "id2label": {str(i): id2label[i] for i in sorted(id2label)},
        "label2id": {id2label[i]: i for i in sorted(id2label)}}, indent=2) + "\n")


def peft_config_for(tm: TaskModel, build_config: PeftConfigBuilder) -> PeftConfig:
    """The method's peft config, with the encoder's whole head (classifier + pooler) added to
    `modules_to_save` so it trains and is saved with the adapter."""
    from lmadapt.methods.head.method import head_modules

    config = build_config(tm, TASK_TYPES[tm.kind])
    if tm.kind == "encoder":
        names = {id(module): name for name, module in tm.model.named_modules()}
        heads = [names[id(m)] for m in head_modules(tm) if any(True for _ in m.parameters())]
        config.modules_to_save = sorted(set(config.modules_to_save or []) | set(heads))
    return config


def fit_peft(method: str, train: Task, eval_task: Task | None, ctx: RunContext,
             build_config: PeftConfigBuilder, default_lr: float) -> tuple[TaskModelAdapted, TrainResult]:
    """Wrap ctx.model with the peft config build_config makes, train it, return the adapted model."""
    tm = task_model_for(train, ctx, method=method)
    seed_everything(ctx.train.seed)  # adapter initialisation is part of the run's seed
    config = peft_config_for(tm, build_config)
    try:
        tm.model = get_peft_model(tm.model, config)
    except ValueError as err:
        raise LmadaptError(f"{method}: {str(err).splitlines()[0][:200]}") from None
    install_prompt_hooks(tm.model, tm.kind)
    adapted = fitted(tm, save_adapter)
    result = train_task_model(tm, train, eval_task, ctx, default_lr)
    return adapted, result


def load_peft(method: str, artifact_dir: Path, task: Task, ctx: RunContext) -> TaskModelAdapted:
    """Rebuild the adapted model from artifact_dir/adapter (a plain PEFT folder)."""
    folder = artifact_dir / ADAPTER_DIR
    if not (folder / "adapter_config.json").exists():
        raise LmadaptError(f"{folder} has no adapter_config.json; is this a {method} run folder?")
    tm = task_model_for(task, ctx, method=method)
    tm.model = PeftModel.from_pretrained(tm.model, str(folder), is_trainable=False)
    install_prompt_hooks(tm.model, tm.kind)
    tm.model.eval()
    adapted = fitted(tm, save_adapter)
    return adapted


PEFT_METHODS: dict[str, type] = {}  # name → PeftMethod subclass; each subclass registers itself


class PeftMethod:
    """A method that is one peft config trained with the shared loop. Subclasses set `name`,
    `config_class`, `summary`, `default_lr_field` (the config field used when lr=0) and
    `peft_config(cfg, tm, task_type)`; fitting, saving and loading are the same for all. Every
    subclass is also a possible distill student (`distill_student=NAME`)."""

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        PEFT_METHODS[cls.name] = cls

    name: str
    config_class: type
    summary: str
    default_lr_field: str
    model_kinds: tuple[str, ...] = ("encoder", "causal", "seq2seq")
    task_kinds: tuple[str, ...] = ("classification", "generation")
    trains = True

    def peft_config(self, cfg: Any, tm: TaskModel, task_type: TaskType) -> PeftConfig:
        raise NotImplementedError

    def fit(self, train: Task, eval_task: Task | None, cfg: Any,
            ctx: RunContext) -> tuple[TaskModelAdapted, TrainResult]:
        return fit_peft(self.name, train, eval_task, ctx,
                        lambda tm, task_type: self.peft_config(cfg, tm, task_type),
                        getattr(cfg, self.default_lr_field))

    def load(self, artifact_dir: Path, task: Task, cfg: Any, ctx: RunContext) -> TaskModelAdapted:
        return load_peft(self.name, artifact_dir, task, ctx)
