"""Pieces the three RLHF stages share: loading a backbone (+ LoRA), saving it, the run record."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from transformers import PreTrainedTokenizerBase

from lmadapt.decoding.scoring import continuation_logprobs
from lmadapt.errors import LmadaptError
from lmadapt.eval.metrics import bootstrap_mean_ci
from lmadapt.manifest import read_json_object, store_path
from lmadapt.methods.peft_common.targets import qv_targets
from lmadapt.models.load import count_params
from lmadapt.report.record import RunRecord, RunStore, hardware, versions
from lmadapt.utils import atomic_write_text, dir_bytes

MANIFEST = "lmadapt.json"


def add_lora(model: torch.nn.Module, task_type: TaskType, r: int, targets: str = "qv") -> PeftModel:
    """Wrap model with a LoRA (peft, alpha = 2r) on its query/value projections (targets="qv") or
    on every linear layer but the output ("all-linear"); the head trains too for SEQ_CLS."""
    modules = "all-linear" if targets == "all-linear" else qv_targets(model)
    config = LoraConfig(task_type=task_type, r=r, lora_alpha=2.0 * r, lora_dropout=0.0,
                        target_modules=modules, bias="none")
    try:
        return get_peft_model(model, config)
    except ValueError as err:
        raise LmadaptError(f"cannot add LoRA to {type(model).__name__}: {str(err).splitlines()[0][:160]}") from None


def save_backbone(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, artifact_dir: Path) -> str:
    """artifact_dir/adapter (a plain PEFT folder) for a PeftModel, else artifact_dir/model (HF folder)."""
    folder = artifact_dir / ("adapter" if isinstance(model, PeftModel) else "model")
    model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))
    return folder.name


def write_manifest(work: Path, method: str, **fields: Any) -> None:
    """lmadapt.json: what to rebuild the stage's model from. Local model paths (`model.model`,
    `base`) and a reward given as a folder or `file.py:function` are stored resolved
    (lmadapt.manifest.store_path), so the run folder works from any directory."""
    if isinstance(fields.get("model"), dict):
        fields["model"] = {**fields["model"], "model": store_path(fields["model"].get("model", ""))}
    for key in ("base", "reward"):
        if isinstance(fields.get(key), str):
            fields[key] = store_path(fields[key])
    data = {"format": 1, "method": method, **fields}
    atomic_write_text(work / MANIFEST, json.dumps(data, indent=2, default=str))


def read_manifest(run_dir: Path, method: str) -> dict:
    path = Path(run_dir) / MANIFEST
    if not path.exists():
        raise LmadaptError(f"{run_dir} is not an lmadapt run folder (no {MANIFEST}); pass the --out of "
                           f"`lmadapt rlhf {method.removeprefix('rlhf-')}`")
    data = read_json_object(path)
    if data.get("method") != method:
        raise LmadaptError(f"{run_dir} holds a {data.get('method')!r} run, not {method!r}")
    return data


def make_record(method: str, model: Any, task: str, metric: str, values: np.ndarray,
                trained: torch.nn.Module, work: Path, seed: int, train_seconds: float,
                peak_memory: int, config: dict, extra: dict, train_examples: int,
                train_steps: int, final_loss: float | None = None,
                tokens_per_second: float = 0.0, eval_seconds: float = 0.0) -> RunRecord:
    """The RunRecord of one stage: score = mean of per-example `values` with a bootstrap 95% CI."""
    values = np.asarray(values, dtype=float)
    low, high = bootstrap_mean_ci(values, seed=seed)
    trainable, total = count_params(trained)
    return RunRecord(
        method=method, model=model.model, task=task, metric=metric,
        score=float(values.mean()) if len(values) else 0.0, ci_low=low, ci_high=high,
        trainable_params=trainable, total_params=total, peak_memory_bytes=peak_memory,
        train_seconds=train_seconds,
        eval_examples_per_second=len(values) / eval_seconds if eval_seconds > 0 else 0.0,
        artifact_bytes=dir_bytes(work / "artifact") if (work / "artifact").exists() else 0,
        seed=seed, versions=versions(), train_examples=train_examples, eval_examples=len(values),
        train_steps=train_steps, train_tokens_per_second=tokens_per_second,
        eval_latency_ms=1000 * eval_seconds / max(1, len(values)), final_loss=final_loss,
        hardware=hardware(), created=time.strftime("%Y-%m-%dT%H:%M:%S"),
        config={**config, "model": asdict(model)}, extra=extra)


def store_record(record: RunRecord, work: Path) -> None:
    """record.json + the run's SQLite store, like every `tune` run."""
    record.write(work / "record.json")
    RunStore(work / "runs.sqlite").add(record)


def sequence_logps(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   loss_mask: torch.Tensor) -> torch.Tensor:
    """Summed log-probability of the masked tokens of each row: (B,).

    input_ids, attention_mask, loss_mask: (B, T), left-padded; loss_mask marks response tokens.
    The one scoring path (lmadapt.decoding.scoring) with the policy as the logit source:
    gradients flow, and only the response positions go through the LM head.
    """
    return continuation_logprobs(model, input_ids, attention_mask, loss_mask)
