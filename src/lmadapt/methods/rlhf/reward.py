"""Reward model: any HF backbone (encoder or causal, full or LoRA) with a scalar head.

Trained on preference pairs with the Bradley-Terry loss (Ouyang et al., 2022, Eq. 1;
Bradley & Terry, 1952):

    loss(θ) = −E_(x, y_w, y_l) [ log σ( r_θ(x, y_w) − r_θ(x, y_l) ) ]

through the shared training loop (`train.loop.train`), which only needs `collate`, `loss`,
`count_tokens` and `.model`. The score of a run is pairwise accuracy on held-out pairs:
the fraction with r(x, y_w) > r(x, y_l), with a bootstrap 95% CI.

The model reads the prompt and the response as ONE text (`data.join_text`), so PPO can score
"prompt + generated continuation" exactly as training saw "prompt + chosen".
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from peft import PeftModel, TaskType
from transformers import AutoModelForSequenceClassification, PreTrainedTokenizerBase

from lmadapt.errors import LmadaptError
from lmadapt.manifest import build, load_path, section
from lmadapt.methods.rlhf.common import (
    MANIFEST,
    add_lora,
    make_record,
    read_manifest,
    save_backbone,
    store_record,
    write_manifest,
)
from lmadapt.methods.rlhf.config import RewardConfig
from lmadapt.methods.rlhf.data import PreferencePair, join_text
from lmadapt.models.load import (
    ModelSpec,
    load_config,
    load_tokenizer,
    model_kind,
    resolve_model_ref,
)
from lmadapt.report.record import PeakMemory, RunRecord
from lmadapt.train.config import TrainConfig
from lmadapt.train.loop import train
from lmadapt.utils import atomic_dir, seed_everything

METHOD = "rlhf-reward"


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """Mean −log σ(r_w − r_l) over pairs (Ouyang et al., 2022, Eq. 1). r_*: (B,) → scalar."""
    return -F.logsigmoid(r_chosen - r_rejected).mean()


def load_reward_backbone(ref: str, spec: ModelSpec) -> tuple[torch.nn.Module, PreTrainedTokenizerBase, str]:
    """(sequence-classification model with ONE output, tokenizer, kind) for a resolved reference."""
    kind = model_kind(load_config(ref, spec.trust_remote_code))
    tokenizer = load_tokenizer(ref, kind, spec.trust_remote_code)
    model = AutoModelForSequenceClassification.from_pretrained(
        ref, num_labels=1, dtype=spec.torch_dtype, trust_remote_code=spec.trust_remote_code)
    model.config.pad_token_id = tokenizer.pad_token_id  # causal heads find the last real token by it
    return model.to(spec.torch_device()), tokenizer, kind


def reward_batch(tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    """Tokenised texts (B, T); causal tokenizers pad on the left, encoders on the right."""
    return dict(tokenizer(texts, truncation=True, padding=True, max_length=max_length, return_tensors="pt"))


def rewards_of(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Scalar reward of each row: (B,)."""
    return model(**batch).logits[:, 0].float()


@dataclass
class RewardLoss:
    """What the shared loop needs to train a reward model: batching + Bradley-Terry loss."""

    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    max_length: int = 256

    def collate(self, pairs: list[PreferencePair]) -> dict[str, torch.Tensor]:
        """Rows [0, B) hold prompt+chosen, rows [B, 2B) prompt+rejected: (2B, T)."""
        texts = [join_text(p.prompt, p.chosen) for p in pairs] + [join_text(p.prompt, p.rejected) for p in pairs]
        return reward_batch(self.tokenizer, texts, self.max_length)

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        rewards = rewards_of(model, batch)  # (2B,)
        half = rewards.shape[0] // 2
        return bradley_terry_loss(rewards[:half], rewards[half:])

    @staticmethod
    def count_tokens(batch: dict[str, torch.Tensor]) -> int:
        return int(batch["attention_mask"].sum())


class RewardScorer:
    """A trained reward model as a callable: scorer(prompts, responses) → rewards (N,)."""

    def __init__(self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, max_length: int = 256,
                 batch_size: int = 32) -> None:
        self.model, self.tokenizer = model.eval(), tokenizer
        self.max_length, self.batch_size = max_length, batch_size

    @torch.inference_mode()
    def score_texts(self, texts: list[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = reward_batch(self.tokenizer, texts[start:start + self.batch_size], self.max_length)
            out.append(rewards_of(self.model, {k: v.to(device) for k, v in batch.items()}).cpu())
        return torch.cat(out) if out else torch.zeros(0)

    def __call__(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        return self.score_texts([join_text(p, r) for p, r in zip(prompts, responses, strict=True)])


def pairwise_correct(scorer: RewardScorer, pairs: list[PreferencePair]) -> np.ndarray:
    """1.0 where r(prompt, chosen) > r(prompt, rejected), else 0.0: (N,)."""
    chosen = scorer([p.prompt for p in pairs], [p.chosen for p in pairs])
    rejected = scorer([p.prompt for p in pairs], [p.rejected for p in pairs])
    return (chosen > rejected).float().numpy()


def train_reward_model(spec: ModelSpec, train_pairs: list[PreferencePair], eval_pairs: list[PreferencePair],
                       cfg: RewardConfig, train_cfg: TrainConfig, out: Path, task: str = "preferences",
                       overwrite: bool = False, inputs: tuple[str, ...] = ()) -> RunRecord:
    """Train a reward model; writes out/record.json, out/artifact/{model|adapter}, out/lmadapt.json."""
    ref = resolve_model_ref(spec.model)
    with atomic_dir(Path(out), overwrite=overwrite, inputs=(*inputs, ref)) as work, PeakMemory() as memory:
        seed_everything(train_cfg.seed)
        model, tokenizer, kind = load_reward_backbone(ref, spec)
        if cfg.reward_adapter == "lora":
            model = add_lora(model, TaskType.SEQ_CLS, cfg.reward_lora_r)
        lr = train_cfg.lr or cfg.reward_default_lr * (10 if cfg.reward_adapter == "lora" else 1)
        train_cfg = replace(train_cfg, lr=lr)
        objective = RewardLoss(model, tokenizer, train_cfg.max_length)
        result = train(objective, train_pairs, train_cfg, work)
        scorer = RewardScorer(objective.model, tokenizer, train_cfg.max_length, train_cfg.eval_batch_size)
        began = time.perf_counter()
        correct = pairwise_correct(scorer, eval_pairs)
        eval_seconds = time.perf_counter() - began
        folder = save_backbone(objective.model, tokenizer, work / "artifact")
        write_manifest(work, METHOD, model=asdict(spec), base=ref, kind=kind, artifact=folder,
                       method_config=asdict(cfg), max_length=train_cfg.max_length)
        record = make_record(
            METHOD, spec, task, "pairwise_accuracy", correct, objective.model, work, train_cfg.seed,
            result.seconds, memory.peak, {"method": asdict(cfg), "train": asdict(train_cfg)},
            {"eval_pairs": len(eval_pairs), "model_kind": kind}, len(train_pairs), result.steps,
            result.losses[-1] if result.losses else None, result.tokens_per_second, eval_seconds)
        store_record(record, work)
    return record


def load_reward_model(run_dir: str | Path, device: str = "auto", batch_size: int = 32,
                      trust_remote_code: bool = False) -> RewardScorer:
    """The reward model saved by `train_reward_model` (or `lmadapt rlhf reward`) as a scorer.

    The run folder's manifest never turns on `trust_remote_code`; only the caller's flag does."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir, METHOD)
    path = run_dir / MANIFEST
    spec = build(ModelSpec, section(manifest, "model", path), "model", path, required=("model",))
    spec = replace(spec, device=device, trust_remote_code=trust_remote_code)
    artifact = section(manifest, "artifact", path)
    if artifact not in ("adapter", "model"):
        raise LmadaptError(f"{path}: artifact = {artifact!r} is not 'adapter' or 'model'")
    folder = run_dir / "artifact" / artifact
    if artifact == "adapter":
        base = section(manifest, "base", path)
        if not isinstance(base, str) or not base:
            raise LmadaptError(f"{path}: base = {base!r} is not a model reference")
        model, tokenizer, _ = load_reward_backbone(load_path(base, run_dir), spec)
        model = PeftModel.from_pretrained(model, str(folder), is_trainable=False)
    else:
        model, tokenizer, _ = load_reward_backbone(str(folder), spec)
    max_length = manifest.get("max_length", 256)
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1:
        raise LmadaptError(f"{path}: max_length = {max_length!r} is not a positive integer")
    return RewardScorer(model, tokenizer, max_length, batch_size)
