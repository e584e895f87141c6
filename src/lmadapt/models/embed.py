"""Frozen sentence embeddings from any HF encoder or decoder: CLS, mean or last-token pooling.

`frozen_states` computes every pooling of a frozen model's last hidden states at once, through
the process's feature cache (`feature_cache.py`) when the model was loaded from a spec: the
training texts of a compare are embedded once per model, for every run that reads them.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoModel, PreTrainedTokenizerBase

from lmadapt.errors import LmadaptError
from lmadapt.models.feature_cache import FEATURES, Computed, inputs_digest, weights_fingerprint
from lmadapt.models.load import (
    ModelSpec,
    load_config,
    load_tokenizer,
    model_kind,
    resolve_model_ref,
)
from lmadapt.models.task_model import context_window

POOLINGS = ("auto", "cls", "mean", "last")
POOLED = ("cls", "mean", "last")  # what frozen_states keeps for each text


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(B, T, C) hidden states + (B, T) mask → (B, C) sentence vectors."""
    if pooling == "cls":
        first = mask.float().argmax(dim=1)  # first real token (left padding safe)
        return hidden[torch.arange(hidden.shape[0]), first]
    if pooling == "last":
        positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
        last = (positions * mask).argmax(dim=1)  # last real token (either padding side)
        return hidden[torch.arange(hidden.shape[0]), last]
    weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def frozen_states(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int,
                  batch_size: int = 32, fingerprint: str | None = None, progress: bool = False) -> Computed:
    """Every pooling (POOLED) of `model`'s last hidden states for each text, (N, C) float32 each,
    and "tokens" (N,), the tokens each text was cut to. The model runs in eval mode (no dropout)
    without gradients. With a weights `fingerprint` (the model as loaded from its files, frozen)
    the result is shared through the process's feature cache; None computes afresh."""
    key = None if fingerprint is None else ("pooled", fingerprint, max_length, inputs_digest(texts))

    @torch.inference_mode()
    def compute() -> dict[str, np.ndarray]:
        device, was_training = next(model.parameters()).device, model.training
        model.eval()
        chunks: dict[str, list[np.ndarray]] = {name: [] for name in (*POOLED, "tokens")}
        try:
            starts = range(0, len(texts), batch_size)
            for start in tqdm(starts, desc="embed", unit="batch", disable=not progress, leave=False):
                enc = tokenizer(texts[start:start + batch_size], truncation=True, padding=True,
                                max_length=max_length, return_tensors="pt").to(device)
                hidden = model(**enc).last_hidden_state  # (B, T, C)
                for name in POOLED:
                    chunks[name].append(pool(hidden, enc["attention_mask"], name).float().cpu().numpy())
                chunks["tokens"].append(enc["attention_mask"].sum(1).cpu().numpy())
        finally:
            model.train(was_training)
        width = model.config.hidden_size
        return {name: np.concatenate(parts) if parts else np.zeros((0,) if name == "tokens" else (0, width), np.float32)
                for name, parts in chunks.items()}

    return FEATURES.get_or_compute(key, compute)


class FrozenEmbedder:
    """Embeds texts with a frozen backbone (the base model without any head)."""

    def __init__(self, spec: ModelSpec, pooling: str = "auto", max_length: int = 256) -> None:
        if pooling not in POOLINGS:
            raise LmadaptError(f"unknown pooling {pooling!r}; use one of {', '.join(POOLINGS)}")
        ref = resolve_model_ref(spec.model)
        config = load_config(ref, spec.trust_remote_code)
        self.kind = model_kind(config)
        if self.kind == "seq2seq":
            raise LmadaptError("frozen features from a seq2seq model are not supported; use an encoder or causal LM")
        self.pooling = pooling if pooling != "auto" else ("mean" if self.kind == "encoder" else "last")
        self.tokenizer: PreTrainedTokenizerBase = load_tokenizer(ref, self.kind, spec.trust_remote_code)
        self.model = AutoModel.from_pretrained(ref, dtype=spec.torch_dtype,
                                               trust_remote_code=spec.trust_remote_code)
        self.model.to(spec.torch_device()).eval().requires_grad_(False)
        self.max_length = min(max_length, context_window(self.model, self.tokenizer))  # as TaskModel cuts
        self.fingerprint = weights_fingerprint(spec)  # the weights as loaded: shareable embeddings

    @classmethod
    def from_backbone(cls, backbone: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, kind: str,
                      pooling: str = "auto", max_length: int = 256) -> FrozenEmbedder:
        """Reuse an already loaded backbone (e.g. a causal LM's decoder) instead of loading again."""
        self = cls.__new__(cls)
        self.kind, self.tokenizer, self.model, self.max_length = kind, tokenizer, backbone, max_length
        self.fingerprint = None  # a backbone may have been changed in memory: never shared
        self.pooling = pooling if pooling != "auto" else ("mean" if kind == "encoder" else "last")
        return self

    @property
    def total_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @torch.inference_mode()
    def encode(self, texts: list[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """(N, C) float32 embeddings."""
        device = next(self.model.parameters()).device
        chunks = []
        starts = range(0, len(texts), batch_size)
        for start in tqdm(starts, desc="embed", unit="batch", disable=not progress, leave=False):
            enc = self.tokenizer(texts[start:start + batch_size], truncation=True, padding=True,
                                 max_length=self.max_length, return_tensors="pt").to(device)
            hidden = self.model(**enc).last_hidden_state  # (B, T, C)
            chunks.append(pool(hidden, enc["attention_mask"], self.pooling).float().cpu().numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, self.model.config.hidden_size), np.float32)

    def encode_shared(self, texts: list[str], batch_size: int = 32, progress: bool = False) -> Computed:
        """Like `encode` (arrays["vectors"], read-only), computed once per process for the same
        model, max_length and texts (`frozen_states`); "seconds" is what computing them took."""
        states = frozen_states(self.model, self.tokenizer, texts, self.max_length, batch_size,
                               self.fingerprint, progress)
        return Computed({"vectors": states.arrays[self.pooling]}, states.seconds)
