"""Method `dpo`: preference tuning without a reward model or rollouts (Rafailov et al., 2023,
arXiv 2305.18290), on a task of preference pairs.

Eq. 7 of the paper, with y_w the chosen and y_l the rejected response:

    L_DPO = −E[ log σ( β · [ (log π_θ(y_w|x) − log π_ref(y_w|x)) − (log π_θ(y_l|x) − log π_ref(y_l|x)) ] ) ]

Trained through the shared loop (`train.loop.train`). The reference log-probs come from the same
model with its LoRA adapter disabled (no second copy), or from a frozen copy for full tuning;
they are computed in eval mode (no dropout) under no_grad inside `loss`.
The run's score is the held-out preference accuracy of the implicit reward
r̂(x, y) = β (log π_θ(y|x) − log π_ref(y|x)): the fraction of pairs with r̂(x, y_w) > r̂(x, y_l).
The tuned policy `predict`s by generating a response to each prompt (greedy).
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from peft import PeftModel, TaskType
from transformers import PreTrainedTokenizerBase

from lmadapt.data.task import PreferenceExample, Task
from lmadapt.decoding import GenerationConfig, generate
from lmadapt.decoding.engine import left_pad
from lmadapt.methods.base import Adapted, RunContext, with_default_lr
from lmadapt.methods.rlhf.common import (
    add_lora,
    load_backbone,
    pair_scores,
    save_backbone,
    sequence_logps,
)
from lmadapt.methods.rlhf.config import DPOConfig
from lmadapt.methods.rlhf.data import join_text, pairs_of, read_preferences
from lmadapt.models.load import ModelSpec, count_params, load_causal_lm
from lmadapt.models.scoring import encode_pair
from lmadapt.train.loop import TrainResult, train
from lmadapt.utils import seed_everything


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Rafailov et al., 2023, Eq. 7. Inputs: summed response log-probs, each (B,).

    Returns (mean loss, per-pair margin β·[(π_w − ref_w) − (π_l − ref_l)] (B,)).
    """
    margin = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))  # (B,)
    return -F.logsigmoid(margin).mean(), margin


def response_text(prompt: str, response: str) -> str:
    """The response as it follows the prompt, with the same joining rule as `data.join_text`."""
    return join_text(prompt, response)[len(prompt):]


@dataclass
class DPOLoss:
    """What the shared loop needs for DPO: batching of pairs + the DPO loss against the reference."""

    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    beta: float = 0.1
    max_length: int = 256
    reference: torch.nn.Module | None = field(default=None, repr=False)  # frozen copy (full tuning)

    def collate(self, pairs: list[PreferenceExample]) -> dict[str, torch.Tensor]:
        """Rows [0, B) prompt+chosen, rows [B, 2B) prompt+rejected, left-padded: (2B, T) each.

        loss_mask marks the response tokens (and the EOS appended after them)."""
        eos = self.tokenizer.eos_token or ""
        responses = [p.chosen for p in pairs] + [p.rejected for p in pairs]
        prompts = [p.prompt for p in pairs] * 2
        rows = [encode_pair(self.tokenizer, prompt, response_text(prompt, response) + eos, self.max_length)
                for prompt, response in zip(prompts, responses, strict=True)]
        ids, mask = left_pad([ids for ids, _ in rows], self.tokenizer.pad_token_id)
        loss_mask = torch.zeros_like(ids)
        for row, (_, n_target) in enumerate(rows):
            loss_mask[row, -n_target:] = 1
        return {"input_ids": ids, "attention_mask": mask, "loss_mask": loss_mask}

    @torch.no_grad()
    def reference_logps(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Summed response log-probs under the reference (adapter off, or the frozen copy): (2B,)."""
        model = self.reference if self.reference is not None else self.model
        was_training = model.training
        model.eval()
        switch = model.disable_adapter() if self.reference is None else contextlib.nullcontext()
        with switch:
            out = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"])
        model.train(was_training)
        return out

    def pair_logps(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(policy log-probs (2B,), reference log-probs (2B,))."""
        policy = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"])
        return policy, self.reference_logps(batch)

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        policy, ref = self.pair_logps(model, batch)
        half = policy.shape[0] // 2
        return dpo_loss(policy[:half], policy[half:], ref[:half], ref[half:], self.beta)[0]

    @staticmethod
    def count_tokens(batch: dict[str, torch.Tensor]) -> int:
        return int(batch["attention_mask"].sum())


@torch.no_grad()
def dpo_margins(objective: DPOLoss, pairs: list[PreferenceExample], batch_size: int = 16) -> np.ndarray:
    """Implicit-reward margin r̂(x, y_w) − r̂(x, y_l) of each pair: (N,)."""
    objective.model.eval()
    device = next(objective.model.parameters()).device
    out = []
    for start in range(0, len(pairs), batch_size):
        batch = {k: v.to(device) for k, v in objective.collate(pairs[start:start + batch_size]).items()}
        policy, ref = objective.pair_logps(objective.model, batch)
        half = policy.shape[0] // 2
        out.append(dpo_loss(policy[:half], policy[half:], ref[:half], ref[half:], objective.beta)[1].cpu())
    return torch.cat(out).numpy()


def build_dpo_objective(spec: ModelSpec, cfg: DPOConfig, max_length: int) -> tuple[DPOLoss, str]:
    """A causal LM with LoRA (reference = adapter off) or all weights trainable (+ a frozen copy)."""
    model, tokenizer, ref = load_causal_lm(spec, "DPO")
    reference = None
    if cfg.dpo_adapter == "lora":
        model = add_lora(model, TaskType.CAUSAL_LM, cfg.dpo_lora_r)
    else:
        reference = copy.deepcopy(model).requires_grad_(False).eval()
        model.requires_grad_(True)
    return DPOLoss(model, tokenizer, cfg.beta, max_length, reference), ref


@dataclass
class DPOAdapted(Adapted):
    """A DPO-tuned policy: `predict` generates a response to each prompt (greedy, up to
    max_new_tokens); `evaluate` scores held-out pairs by the implicit reward's accuracy."""

    objective: DPOLoss
    max_new_tokens: int = 32
    template: str = "{text}"
    trainable_params: int = 0
    total_params: int = 0
    before: np.ndarray | None = field(default=None, repr=False)  # held-out margins before training
    after: np.ndarray | None = field(default=None, repr=False)

    @torch.inference_mode()
    def predict(self, texts: list[str], batch_size: int = 16) -> list[str]:
        self.objective.model.eval()
        prompts = [self.template.replace("{text}", t) for t in texts]
        return generate(self.objective.model, self.objective.tokenizer, prompts,
                        GenerationConfig(max_new_tokens=self.max_new_tokens), batch_size)

    def evaluate(self, task: Task, seed: int = 0, batch_size: int = 32) -> tuple[list[str], dict[str, Any]]:
        """Predictions are the response the implicit reward prefers; score = its pair accuracy."""
        pairs = pairs_of(task)
        self.after = dpo_margins(self.objective, pairs, batch_size)
        correct = self.after > 0
        return ([p.chosen if ok else p.rejected for p, ok in zip(pairs, correct, strict=True)],
                pair_scores("implicit_reward_accuracy", correct, seed))

    def figures(self, task: Task) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.before is not None and len(self.before):
            out.update(margin_before=float(self.before.mean()), accuracy_before=float((self.before > 0).mean()))
        if self.after is not None and len(self.after):
            out.update(margin_after=float(self.after.mean()),
                       eval_loss_after=float(np.logaddexp(0.0, -self.after).mean()))  # −log σ(margin)
        return out

    def save(self, artifact_dir: Path) -> None:
        artifact_dir.mkdir(parents=True, exist_ok=True)
        save_backbone(self.objective.model, self.objective.tokenizer, artifact_dir)


class DPO:
    name = "dpo"
    config_class = DPOConfig
    summary = "DPO: a causal LM tuned on preference pairs, no reward model"
    model_kinds = ("causal",)
    task_kinds = ("preferences",)
    trains = True
    lr_range = (1e-5, 2e-3)  # learning rates a search tries (log scale)

    @staticmethod
    def default_lr(cfg: DPOConfig) -> float:
        return cfg.dpo_default_lr if cfg.dpo_adapter == "lora" else cfg.dpo_default_lr / 50
    merge_note = "its policy is already a PEFT folder (artifact/adapter) or a whole model (artifact/model)"
    demo_note = "needs preference pairs (docs/rlhf.md)"
    load_task = staticmethod(read_preferences)  # prompt/chosen/rejected rows

    def fit(self, train_task: Task, eval_task: Task | None, cfg: DPOConfig,
            ctx: RunContext) -> tuple[DPOAdapted, TrainResult]:
        seed_everything(ctx.train.seed)
        objective, _ = build_dpo_objective(ctx.model, cfg, ctx.train.max_length)
        held_out = pairs_of(eval_task) if eval_task is not None else []
        before = dpo_margins(objective, held_out, ctx.train.eval_batch_size) if held_out else None
        train_cfg = with_default_lr(ctx.train, self.default_lr(cfg))

        def eval_fn(epoch: int) -> dict:
            return {"score": float((dpo_margins(objective, held_out, train_cfg.eval_batch_size) > 0).mean())}
        result = train(objective, pairs_of(train_task), train_cfg, ctx.work_dir, eval_fn if held_out else None)
        adapted = DPOAdapted(objective, ctx.train.max_new_tokens, train_task.template,
                             *count_params(objective.model), before=before)
        return adapted, result

    def load(self, artifact_dir: Path, task: Task, cfg: DPOConfig, ctx: RunContext) -> DPOAdapted:
        """The saved policy (base + artifact/adapter, or artifact/model with the base as reference)."""
        base, tokenizer, ref = load_causal_lm(ctx.model, "DPO")
        device = ctx.model.torch_device()

        def load(path: str) -> torch.nn.Module:
            return base if path == ref else load_causal_lm(ModelSpec(**{**ctx.model.__dict__, "model": path}), "DPO")[0]
        policy = load_backbone(artifact_dir, ref, load).to(device).eval()
        reference = None if isinstance(policy, PeftModel) else base.requires_grad_(False).eval()
        objective = DPOLoss(policy, tokenizer, cfg.beta, ctx.train.max_length, reference)
        return DPOAdapted(objective, ctx.train.max_new_tokens, task.template or "{text}", *count_params(policy))
