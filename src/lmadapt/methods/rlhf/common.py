"""Pieces the three RLHF methods share: a backbone (+ LoRA), saving and reloading it, log-probs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from transformers import PreTrainedTokenizerBase

from lmadapt.decoding.scoring import continuation_logprobs
from lmadapt.errors import LmadaptError
from lmadapt.eval.metrics import bootstrap_mean_ci
from lmadapt.methods.peft_common.targets import qv_targets


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


def load_backbone(artifact_dir: Path, base: str, load: Callable[[str], torch.nn.Module]) -> torch.nn.Module:
    """What save_backbone wrote: the adapter on `load(base)`, or `load` of the model folder."""
    adapter = artifact_dir / "adapter"
    if adapter.is_dir():
        return PeftModel.from_pretrained(load(base), str(adapter), is_trainable=False)
    if not (artifact_dir / "model").is_dir():
        raise LmadaptError(f"{artifact_dir} holds neither adapter/ nor model/; the run folder is incomplete")
    return load(str(artifact_dir / "model"))


def sequence_logps(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   loss_mask: torch.Tensor) -> torch.Tensor:
    """Summed log-probability of the masked tokens of each row: (B,).

    input_ids, attention_mask, loss_mask: (B, T), left-padded; loss_mask marks response tokens.
    The one scoring path (lmadapt.decoding.scoring) with the policy as the logit source:
    gradients flow, and only the response positions go through the LM head.
    """
    return continuation_logprobs(model, input_ids, attention_mask, loss_mask)


def pair_scores(metric: str, correct: np.ndarray, seed: int = 0) -> dict[str, float | str]:
    """A run's scores from per-pair outcomes (1 = the chosen response won): mean, bootstrap 95% CI,
    and the outcomes themselves (`per_example`, for paired comparisons)."""
    values = np.asarray(correct, dtype=float)
    low, high = bootstrap_mean_ci(values, seed=seed)
    return {"metric": metric, "score": float(values.mean()) if len(values) else 0.0, "ci_low": low, "ci_high": high,
            "per_example": values.tolist()}
