"""The multi-task loss of Distilling Step-by-Step (Hsieh et al., 2023, §3.2, Eq. 3):

    L = alpha * L_label + (1 - alpha) * L_rationale

Each training example gives a label-task row (prefix "[label] " + input → label) and a
rationale-task row (prefix "[rationale] " + input → the teacher's rationale). L_label is the mean
token cross-entropy over the label rows' target tokens, L_rationale the same over the rationale
rows' target tokens (two forward passes, as in the paper's code). alpha = 1 is the label-only
baseline (no rationale rows at all). At inference only the label task runs (`label_prompt`).

`DistillLoss` is what the shared loop (`train.loop.train`) consumes: collate / loss /
count_tokens, plus a `model` attribute that is the TaskModel's model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmadapt.decoding.engine import left_pad, position_ids_for
from lmadapt.methods.distill.data import RationaleExample
from lmadapt.models.task_model import TaskModel

LABEL, RATIONALE = "label", "rationale"


@dataclass
class DistillLoss:
    """Loss object over a TaskModel: two task rows per example, alpha-weighted (Eq. 3)."""

    tm: TaskModel
    alpha: float = 0.5
    label_prefix: str = "[label] "
    rationale_prefix: str = "[rationale] "
    label_source: str = "gt"  # gt | teacher
    rationale_max_tokens: int = 128

    @property
    def model(self) -> torch.nn.Module:
        return self.tm.model

    @model.setter
    def model(self, value: torch.nn.Module) -> None:
        self.tm.model = value

    # ---- rows -------------------------------------------------------------------------------
    def label_prompt(self, text: str) -> str:
        """The label task's input; the only prompt used at inference."""
        return self.label_prefix + self.tm.task.prompt(text)

    def rationale_prompt(self, text: str) -> str:
        return self.rationale_prefix + self.tm.task.prompt(text)

    def label_target(self, example: RationaleExample) -> str:
        """Ground truth, or the teacher's answer (ground truth where the teacher's was unparsed)."""
        if self.label_source == "teacher" and getattr(example, "teacher_label", ""):
            return example.teacher_label
        return example.target

    def task_rows(self, examples: list[RationaleExample], task: str) -> tuple[list[str], list[str]]:
        """(prompts, targets) of one task; examples without a rationale give no rationale row."""
        if task == LABEL:
            return [self.label_prompt(ex.text) for ex in examples], [self.label_target(ex) for ex in examples]
        kept = [ex for ex in examples if getattr(ex, "rationale", "")]
        return [self.rationale_prompt(ex.text) for ex in kept], [ex.rationale for ex in kept]

    # ---- batching ---------------------------------------------------------------------------
    def _causal(self, prompts: list[str], targets: list[str], max_target: int) -> dict[str, torch.Tensor]:
        """Left-padded prompt + target + EOS rows; loss only on target tokens. (B, T) each."""
        tok, limit = self.tm.tokenizer, self.tm.max_length
        rows, n_target = [], []
        for prompt, target in zip(prompts, targets, strict=True):
            target_ids = tok(target, add_special_tokens=False)["input_ids"][:max_target]
            target_ids = (target_ids + [tok.eos_token_id])[:limit - 1]
            prompt_ids = tok(prompt)["input_ids"][-(limit - len(target_ids)):]
            rows.append(prompt_ids + target_ids)
            n_target.append(len(target_ids))
        ids, mask = left_pad(rows, tok.pad_token_id)
        labels = torch.full_like(ids, -100)
        for row, count in enumerate(n_target):
            labels[row, -count:] = ids[row, -count:]
        return {"input_ids": ids, "attention_mask": mask, "position_ids": position_ids_for(mask),
                "labels": labels}

    def _seq2seq(self, prompts: list[str], targets: list[str], max_target: int) -> dict[str, torch.Tensor]:
        tok = self.tm.tokenizer
        enc = tok(prompts, truncation=True, padding=True, max_length=self.tm.max_length, return_tensors="pt")
        tgt = tok(targets, truncation=True, padding=True, max_length=min(max_target + 1, self.tm.max_length),
                  return_tensors="pt")
        labels = tgt["input_ids"].masked_fill(tgt["attention_mask"] == 0, -100)
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels}

    def encode(self, prompts: list[str], targets: list[str], max_target: int) -> dict[str, torch.Tensor]:
        if self.tm.kind == "seq2seq":
            return self._seq2seq(prompts, targets, max_target)
        return self._causal(prompts, targets, max_target)

    def collate(self, examples: list[RationaleExample]) -> dict[str, torch.Tensor]:
        """One batch holding both tasks' tensors, keys prefixed 'label.' and 'rationale.'."""
        batch: dict[str, torch.Tensor] = {}
        tasks = ([LABEL] if self.alpha > 0 else []) + ([RATIONALE] if self.alpha < 1 else [])
        for task in tasks:
            prompts, targets = self.task_rows(examples, task)
            if not prompts:
                continue
            max_target = self.tm.max_length if task == LABEL else self.rationale_max_tokens
            batch.update({f"{task}.{k}": v for k, v in self.encode(prompts, targets, max_target).items()})
        return batch

    # ---- loss -------------------------------------------------------------------------------
    @staticmethod
    def part(batch: dict[str, torch.Tensor], task: str) -> dict[str, torch.Tensor]:
        return {k.split(".", 1)[1]: v for k, v in batch.items() if k.startswith(task + ".")}

    def task_loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor], task: str) -> torch.Tensor:
        """Mean token cross-entropy of one task's target tokens (0 when the batch has no rows)."""
        inputs = self.part(batch, task)
        if not inputs:
            return torch.zeros((), device=next(self.tm.model.parameters()).device)
        return model(**inputs).loss

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Eq. 3: alpha * L_label + (1 - alpha) * L_rationale."""
        total = torch.zeros((), device=next(self.tm.model.parameters()).device)
        if self.alpha > 0:
            total = total + self.alpha * self.task_loss(model, batch, LABEL)
        if self.alpha < 1:
            total = total + (1 - self.alpha) * self.task_loss(model, batch, RATIONALE)
        return total

    @staticmethod
    def count_tokens(batch: dict[str, torch.Tensor]) -> int:
        return int(sum(v.sum() for k, v in batch.items() if k.endswith("attention_mask")))
