"""Logit sources: things that turn new input ids into next-token logits, each with its own KV cache.

The decoding engine owns the token bookkeeping (attention mask, position ids, finished rows); a
source only runs its model(s) and combines logits. Proxy-tuning (Liu et al., 2024,
arXiv 2401.08565, Eq. 1) lives in `ProxySource` and `SharedLoraProxySource`:

    logits_t = M(x_<t) + alpha * (M+(x_<t) - M-(x_<t))

with M the large base model, M- a small model sharing M's vocabulary and M+ that small model
after tuning. Nothing is renormalised before the sum; the engine applies softmax afterwards.
"""

from __future__ import annotations

import inspect
from typing import Protocol, runtime_checkable

import torch
from transformers import DynamicCache

from lmadapt.decoding.vocab import check_width, output_width

BASE_ADAPTER = "__base__"  # peft's name for "LoRA off" in a mixed-adapter batch


@runtime_checkable
class LogitSource(Protocol):
    """Produces next-token logits for a batch, keeping its own KV cache between calls."""

    vocab_size: int  # logit columns returned
    eos_token_ids: list[int]  # EOS ids from the (base) model's generation config

    def reset(self) -> None:
        """Drop the KV cache(s); the next `step` starts a new batch from scratch."""
        ...

    def step(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        keep: int = 1,
    ) -> torch.Tensor:
        """Feed new tokens and return logits for the last `keep` positions (0 = all).

        input_ids (B, T) new tokens only; attention_mask (B, S) over cache + new tokens;
        position_ids (B, T). Returns float32 logits (B, keep or T, vocab_size).
        """
        ...


def _forward_features(model: torch.nn.Module) -> tuple[str, bool]:
    """Name of the cache kwarg (`cache` in transformers 5, `past_key_values` before) and
    whether the forward accepts `logits_to_keep`."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = inspect.signature(inner.forward).parameters
    cache_kwarg = "cache" if "cache" in params else "past_key_values"
    return cache_kwarg, "logits_to_keep" in params


def _eos_ids(model: torch.nn.Module) -> list[int]:
    """EOS ids from the model's generation config (int, list or None)."""
    gen_config = getattr(model, "generation_config", None)
    eos = getattr(gen_config, "eos_token_id", None)
    if eos is None:
        return []
    return [int(eos)] if isinstance(eos, int) else [int(e) for e in eos]


class ModelSource:
    """One causal LM with one KV cache. Plain generation uses this source alone."""

    def __init__(self, model: torch.nn.Module, vocab_size: int | None = None, name: str = "model"):
        """`vocab_size` = len(tokenizer); logits are cut to that many columns (padded rows dropped)."""
        if vocab_size is not None:
            check_width(model, vocab_size, name)
        self.model = model.eval()
        self.vocab_size = vocab_size or output_width(model)
        self.eos_token_ids = _eos_ids(model)
        self.device = next(model.parameters()).device
        self._cache_kwarg, self._has_logits_to_keep = _forward_features(model)
        self._cache: DynamicCache | None = None

    def reset(self) -> None:
        """Start over with an empty KV cache."""
        self._cache = None

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        keep: int = 1,
        **extra: object,
    ) -> torch.Tensor:
        """Run the model on new tokens, extending the cache; `extra` goes to the forward
        (e.g. peft's `adapter_names`). Returns float32 logits (B, K, vocab_size)."""
        if self._cache is None:
            self._cache = DynamicCache(config=self.model.config)
        kwargs: dict[str, object] = {self._cache_kwarg: self._cache, "use_cache": True, **extra}
        if self._has_logits_to_keep:
            kwargs["logits_to_keep"] = keep
        out = self.model(
            input_ids=input_ids.to(self.device),
            attention_mask=attention_mask.to(self.device),
            position_ids=position_ids.to(self.device),
            **kwargs,
        )
        logits = out.logits  # (B, T or keep, V_model)
        if keep and logits.shape[1] != keep:
            logits = logits[:, -keep:]
        return logits[..., : self.vocab_size].float()  # (B, K, V)

    step = forward


class ProxySource:
    """Proxy-tuning with three separate models, three KV caches (Liu et al., 2024, Eq. 1)."""

    def __init__(
        self,
        base: torch.nn.Module,
        expert: torch.nn.Module,
        anti_expert: torch.nn.Module,
        alpha: float = 1.0,
        vocab_size: int | None = None,
    ):
        """`vocab_size` = len(tokenizer) (checked against every model); defaults to the
        narrowest model's logit width. alpha = 0 skips the small models and equals the base."""
        vocab_size = vocab_size or min(output_width(m) for m in (base, expert, anti_expert))
        self.base = ModelSource(base, vocab_size, "base model")
        self.expert = ModelSource(expert, vocab_size, "expert")
        self.anti_expert = ModelSource(anti_expert, vocab_size, "anti-expert")
        self.alpha = float(alpha)
        self.vocab_size = vocab_size
        self.eos_token_ids = self.base.eos_token_ids

    def reset(self) -> None:
        """Empty all three caches."""
        for source in (self.base, self.expert, self.anti_expert):
            source.reset()

    def step(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        keep: int = 1,
    ) -> torch.Tensor:
        """Combined logits (B, K, V) = base + alpha * (expert - anti_expert)."""
        base = self.base.step(input_ids, attention_mask, position_ids, keep)  # (B, K, V)
        if self.alpha == 0.0:
            return base
        expert = self.expert.step(input_ids, attention_mask, position_ids, keep)  # (B, K, V)
        anti = self.anti_expert.step(input_ids, attention_mask, position_ids, keep)  # (B, K, V)
        return base + self.alpha * (expert.to(base.device) - anti.to(base.device))


class SharedLoraProxySource:
    """Proxy-tuning where expert and anti-expert are ONE peft LoRA model.

    Each step runs the small model once on 2B rows, LoRA on for rows [0, B) (expert) and off for
    rows [B, 2B) (anti-expert), via peft's mixed-batch `adapter_names` forward; one KV cache.
    The small model's weights are read once per step instead of twice.
    """

    def __init__(
        self,
        base: torch.nn.Module,
        lora_model: torch.nn.Module,
        alpha: float = 1.0,
        vocab_size: int | None = None,
        adapter_name: str | None = None,
    ):
        """`lora_model` is a `peft.PeftModel` with an unmerged LoRA adapter (`adapter_name`,
        default its active adapter) on the anti-expert's weights."""
        if not hasattr(lora_model, "active_adapter"):
            from lmadapt.errors import LmadaptError

            raise LmadaptError("SharedLoraProxySource needs a peft LoRA model (PeftModel)")
        vocab_size = vocab_size or min(output_width(m) for m in (base, lora_model))
        self.base = ModelSource(base, vocab_size, "base model")
        self.small = ModelSource(lora_model, vocab_size, "LoRA small model")
        self.adapter_name = adapter_name or lora_model.active_adapter
        self.alpha = float(alpha)
        self.vocab_size = vocab_size
        self.eos_token_ids = self.base.eos_token_ids

    def reset(self) -> None:
        """Empty both caches."""
        self.base.reset()
        self.small.reset()

    def step(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        keep: int = 1,
    ) -> torch.Tensor:
        """Combined logits (B, K, V) from one base pass and one 2B-row small pass."""
        base = self.base.step(input_ids, attention_mask, position_ids, keep)  # (B, K, V)
        if self.alpha == 0.0:
            return base
        batch = input_ids.shape[0]
        adapter_names = [self.adapter_name] * batch + [BASE_ADAPTER] * batch
        both = self.small.forward(
            torch.cat([input_ids, input_ids]),  # (2B, T)
            torch.cat([attention_mask, attention_mask]),  # (2B, S)
            torch.cat([position_ids, position_ids]),  # (2B, T)
            keep,
            adapter_names=adapter_names,
        ).to(base.device)  # (2B, K, V)
        expert, anti = both[:batch], both[batch:]  # (B, K, V) each
        return base + self.alpha * (expert - anti)
