"""DPO: preference tuning without a reward model or rollouts (Rafailov et al., 2023, arXiv 2305.18290).

Eq. 7 of the paper, with y_w the chosen and y_l the rejected response:

    L_DPO = −E[ log σ( β · [ (log π_θ(y_w|x) − log π_ref(y_w|x)) − (log π_θ(y_l|x) − log π_ref(y_l|x)) ] ) ]

Trained through the shared loop (`train.loop.train`). The reference log-probs come from the same
model with its LoRA adapter disabled (no second copy), or from a frozen copy for full tuning;
they are computed in eval mode (no dropout) under no_grad inside `loss`.
The run's score is the held-out preference accuracy of the implicit reward
r̂(x, y) = β (log π_θ(y|x) − log π_ref(y|x)): the fraction of pairs with r̂(x, y_w) > r̂(x, y_l).
"""

from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from peft import TaskType
from transformers import PreTrainedTokenizerBase

from lmadapt.decoding.engine import left_pad
from lmadapt.methods.rlhf.common import (
    add_lora,
    make_record,
    save_backbone,
    sequence_logps,
    store_record,
    write_manifest,
)
from lmadapt.methods.rlhf.config import DPOConfig
from lmadapt.methods.rlhf.data import PreferencePair, join_text
from lmadapt.models.load import (
    ModelSpec,
    load_causal_lm,
)
from lmadapt.models.scoring import encode_pair
from lmadapt.report.record import PeakMemory, RunRecord
from lmadapt.train.config import TrainConfig
from lmadapt.train.loop import train
from lmadapt.utils import atomic_dir, seed_everything

METHOD = "rlhf-dpo"


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

    def collate(self, pairs: list[PreferencePair]) -> dict[str, torch.Tensor]:
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
def dpo_margins(objective: DPOLoss, pairs: list[PreferencePair], batch_size: int = 16) -> np.ndarray:
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


def train_dpo(spec: ModelSpec, train_pairs: list[PreferencePair], eval_pairs: list[PreferencePair],
              cfg: DPOConfig, train_cfg: TrainConfig, out: Path, task: str = "preferences",
              overwrite: bool = False, inputs: tuple[str, ...] = ()) -> RunRecord:
    """DPO on preference pairs; writes out/record.json (score = implicit-reward pair accuracy), artifact."""
    with atomic_dir(Path(out), overwrite=overwrite, inputs=(*inputs, spec.model)) as work, PeakMemory() as memory:
        seed_everything(train_cfg.seed)
        objective, ref = build_dpo_objective(spec, cfg, train_cfg.max_length)
        before = dpo_margins(objective, eval_pairs, train_cfg.eval_batch_size)
        default_lr = cfg.dpo_default_lr if cfg.dpo_adapter == "lora" else cfg.dpo_default_lr / 50
        train_cfg = replace(train_cfg, lr=train_cfg.lr or default_lr)
        result = train(objective, train_pairs, train_cfg, work)
        began = time.perf_counter()
        after = dpo_margins(objective, eval_pairs, train_cfg.eval_batch_size)
        eval_seconds = time.perf_counter() - began
        folder = save_backbone(objective.model, objective.tokenizer, work / "artifact")
        write_manifest(work, METHOD, model=asdict(spec), base=ref, artifact=folder, method_config=asdict(cfg),
                       max_length=train_cfg.max_length)
        extra = {"margin_before": float(before.mean()), "margin_after": float(after.mean()),
                 "accuracy_before": float((before > 0).mean()),
                 "eval_loss_after": float(np.logaddexp(0.0, -after).mean())}  # −log σ(margin)
        record = make_record(METHOD, spec, task, "implicit_reward_accuracy", (after > 0).astype(float),
                             objective.model, work, train_cfg.seed, result.seconds, memory.peak,
                             {"method": asdict(cfg), "train": asdict(train_cfg)}, extra, len(train_pairs),
                             result.steps, result.losses[-1] if result.losses else None,
                             result.tokens_per_second, eval_seconds)
        store_record(record, work)
    return record


