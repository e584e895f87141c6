"""Method `reward`: a reward model on any HF backbone (encoder or causal, full or LoRA) with a
scalar head, on a task of preference pairs.

Trained with the Bradley-Terry loss (Ouyang et al., 2022, Eq. 1; Bradley & Terry, 1952):

    loss(θ) = −E_(x, y_w, y_l) [ log σ( r_θ(x, y_w) − r_θ(x, y_l) ) ]

through the shared training loop (`train.loop.train`), which only needs `collate`, `loss`,
`count_tokens` and `.model`. The score of a run is pairwise accuracy on held-out pairs:
the fraction with r(x, y_w) > r(x, y_l), with a bootstrap 95% CI.

The model reads the prompt and the response as ONE text (`data.join_text`), so PPO can score
"prompt + generated continuation" exactly as training saw "prompt + chosen". A reward run folder
is what `rlhf_reward` (PPO) names; `load_reward_model` reads it without `lmadapt.run`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from peft import TaskType
from transformers import AutoModelForSequenceClassification, PreTrainedTokenizerBase

from lmadapt.data.task import PreferenceExample, Task
from lmadapt.errors import LmadaptError
from lmadapt.manifest import build, check_fingerprint, load_path, read_json_object, section
from lmadapt.methods.base import Adapted, RunContext, with_default_lr
from lmadapt.methods.rlhf.common import add_lora, load_backbone, pair_scores, save_backbone
from lmadapt.methods.rlhf.config import RewardConfig
from lmadapt.methods.rlhf.data import join_text, pairs_of, read_preferences
from lmadapt.models.load import (
    ModelSpec,
    count_params,
    load_config,
    load_tokenizer,
    model_kind,
    resolve_model_ref,
)
from lmadapt.train.config import TrainConfig
from lmadapt.train.loop import TrainResult, train
from lmadapt.utils import seed_everything

MANIFEST = "lmadapt.json"


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

    def collate(self, pairs: list[PreferenceExample]) -> dict[str, torch.Tensor]:
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
    def score_texts(self, texts: list[str], batch_size: int | None = None) -> torch.Tensor:
        """The reward of each whole text: (N,)."""
        self.model.eval()
        device = next(self.model.parameters()).device
        size = batch_size or self.batch_size
        out = []
        for start in range(0, len(texts), size):
            batch = reward_batch(self.tokenizer, texts[start:start + size], self.max_length)
            out.append(rewards_of(self.model, {k: v.to(device) for k, v in batch.items()}).cpu())
        return torch.cat(out) if out else torch.zeros(0)

    def __call__(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        return self.score_texts([join_text(p, r) for p, r in zip(prompts, responses, strict=True)])


def reward_margins(scorer: RewardScorer, pairs: list[PreferenceExample]) -> np.ndarray:
    """r(prompt, chosen) − r(prompt, rejected) of each pair: (N,)."""
    chosen = scorer([p.prompt for p in pairs], [p.chosen for p in pairs])
    rejected = scorer([p.prompt for p in pairs], [p.rejected for p in pairs])
    return (chosen - rejected).numpy()


def pairwise_correct(scorer: RewardScorer, pairs: list[PreferenceExample]) -> np.ndarray:
    """1.0 where r(prompt, chosen) > r(prompt, rejected), else 0.0: (N,)."""
    return (reward_margins(scorer, pairs) > 0).astype(float)


@dataclass
class RewardAdapted(Adapted):
    """A trained reward model: `predict` gives each input text's reward (as text, e.g. "0.7312");
    `evaluate` scores held-out preference pairs by pairwise accuracy."""

    scorer: RewardScorer
    kind: str = "encoder"
    trainable_params: int = 0
    total_params: int = 0
    last_margins: np.ndarray | None = None

    def predict(self, texts: list[str], batch_size: int = 16) -> list[str]:
        return [f"{r:.4f}" for r in self.scorer.score_texts(list(texts), batch_size).tolist()]

    def evaluate(self, task: Task, seed: int = 0, batch_size: int = 32) -> tuple[list[str], dict[str, Any]]:
        """Predictions are the response the model prefers; score = pairwise accuracy (95% CI)."""
        pairs = pairs_of(task)
        self.scorer.batch_size = batch_size
        self.last_margins = reward_margins(self.scorer, pairs)
        correct = self.last_margins > 0
        return ([p.chosen if ok else p.rejected for p, ok in zip(pairs, correct, strict=True)],
                pair_scores("pairwise_accuracy", correct, seed))

    def figures(self, task: Task) -> dict[str, Any]:
        out: dict[str, Any] = {"model_kind": self.kind}
        if self.last_margins is not None and len(self.last_margins):
            out["reward_margin"] = float(self.last_margins.mean())
        return out

    def save(self, artifact_dir: Path) -> None:
        artifact_dir.mkdir(parents=True, exist_ok=True)
        save_backbone(self.scorer.model, self.scorer.tokenizer, artifact_dir)


class Reward:
    name = "reward"
    config_class = RewardConfig
    summary = "reward model: scalar head, Bradley-Terry loss (preference pairs)"
    model_kinds = ("encoder", "causal")
    task_kinds = ("preferences",)
    trains = True
    lr_range = (1e-5, 1e-3)  # learning rates a search tries (log scale)

    @staticmethod
    def default_lr(cfg: RewardConfig) -> float:
        return cfg.reward_default_lr * (10 if cfg.reward_adapter == "lora" else 1)
    merge_note = "a reward model scores texts; it is not a weight update of the base LM"
    demo_note = "needs preference pairs (docs/rlhf.md)"
    load_task = staticmethod(read_preferences)  # prompt/chosen/rejected rows

    def fit(self, train_task: Task, eval_task: Task | None, cfg: RewardConfig,
            ctx: RunContext) -> tuple[RewardAdapted, TrainResult]:
        seed_everything(ctx.train.seed)
        model, tokenizer, kind = load_reward_backbone(resolve_model_ref(ctx.model.model), ctx.model)
        if cfg.reward_adapter == "lora":
            model = add_lora(model, TaskType.SEQ_CLS, cfg.reward_lora_r)
        train_cfg = with_default_lr(ctx.train, self.default_lr(cfg))
        objective = RewardLoss(model, tokenizer, train_cfg.max_length)
        scorer = RewardScorer(objective.model, tokenizer, train_cfg.max_length, train_cfg.eval_batch_size)
        eval_fn = None
        if eval_task is not None:
            held_out = pairs_of(eval_task)

            def eval_fn(epoch: int) -> dict:
                return {"score": float(pairwise_correct(scorer, held_out).mean())}
        result = train(objective, pairs_of(train_task), train_cfg, ctx.work_dir, eval_fn)
        scorer.model = objective.model
        return RewardAdapted(scorer, kind, *count_params(objective.model)), result

    def load(self, artifact_dir: Path, task: Task, cfg: RewardConfig, ctx: RunContext) -> RewardAdapted:
        """The saved reward model: base + the PEFT folder (artifact/adapter), or artifact/model."""
        ref = resolve_model_ref(ctx.model.model)
        kind = model_kind(load_config(ref, ctx.model.trust_remote_code))
        model = load_backbone(artifact_dir, ref, lambda path: load_reward_backbone(path, ctx.model)[0])
        tokenizer = load_tokenizer(ref, kind, ctx.model.trust_remote_code)
        scorer = RewardScorer(model.to(ctx.model.torch_device()), tokenizer, ctx.train.max_length,
                              ctx.train.eval_batch_size)
        return RewardAdapted(scorer, kind, *count_params(model))


def load_reward_model(run_dir: str | Path, device: str = "auto", batch_size: int = 32,
                      trust_remote_code: bool = False) -> RewardScorer:
    """The reward model of a `reward` run folder as a scorer(prompts, responses) → (N,).

    Read here, with the strict manifest readers of `lmadapt.manifest` (not `lmadapt.run`): the
    folder's manifest never turns on `trust_remote_code` (only the caller's flag does) and names
    no code to import."""
    run_dir = Path(run_dir)
    path = run_dir / MANIFEST
    if not path.is_file():
        raise LmadaptError(f"{run_dir} is not a reward run folder (no {MANIFEST}); pass the --out of "
                           "`lmadapt rlhf reward` or `lmadapt tune --method reward`")
    manifest = read_json_object(path)
    method = manifest.get("method")
    if method == "rlhf-reward":
        raise LmadaptError(f"{run_dir} holds an `lmadapt rlhf reward` run from an older lmadapt; re-run "
                           "`lmadapt rlhf reward` (or `lmadapt tune --method reward`) to use it as a reward")
    if method != "reward":
        raise LmadaptError(f"{run_dir} holds a {method!r} run, not a reward model; give the --out of "
                           "`lmadapt rlhf reward` or `lmadapt tune --method reward`")
    cfg = build(RewardConfig, section(manifest, "method_config", path), "method_config", path)
    spec = build(ModelSpec, section(manifest, "model", path), "model", path, required=("model",))
    spec = replace(spec, model=load_path(spec.model, run_dir), device=device, trust_remote_code=trust_remote_code)
    if not (Path(spec.model).is_absolute() and not Path(spec.model).exists()):
        check_fingerprint(manifest.get("model_config"), spec.model, trust_remote_code, path)
    train_cfg = build(TrainConfig, section(manifest, "train", path), "train", path)
    ctx = RunContext(model=spec, train=replace(train_cfg, eval_batch_size=batch_size), work_dir=run_dir)
    skeleton = Task.skeleton(run_dir.name, "preferences", [], "{text}")
    try:
        return Reward().load(run_dir / "artifact", skeleton, cfg, ctx).scorer
    except (RuntimeError, ValueError, KeyError, OSError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise LmadaptError(f"{path}: the reward model in {run_dir / 'artifact'} does not load with model "
                           f"{spec.model!r} ({type(err).__name__}: {first})") from None
