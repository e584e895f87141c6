"""Logit sources: things that turn new input ids into next-token logits, each with its own KV cache.

The decoding engine owns the token bookkeeping (attention mask, position ids, finished rows); a
source only runs its model(s) and combines logits. Proxy-tuning (Liu et al., 2024,
arXiv 2401.08565, Eq. 1) lives in `ProxySource` and `SharedLoraProxySource`:

    logits_t = M(x_<t) + alpha * (M+(x_<t) - M-(x_<t))

with M the large base model, M- a small model sharing M's vocabulary and M+ that small model
after tuning. Nothing is renormalised before the sum; the engine applies softmax afterwards.

Head on the difference. When M+ and M- share their LM head W (LoRA experts never touch it),
M+(x) - M-(x) = W h+ - W h- = W (h+ - h-): the small side's vocabulary projection runs once, on
the difference of the final hidden states, instead of once per model. For vocabulary-heavy
small models (Qwen2.5-0.5B: 136M of its 494M weights are the 151,936-row head) that removes a
large share of the small side's weight reads. It is used only where a probe forward shows that
the model's logits are exactly `head(decoder(x))` (no soft-capping or logit scaling).
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager, nullcontext
from typing import Protocol, runtime_checkable

import torch
from transformers import DynamicCache

from lmadapt.decoding.vocab import check_width, output_width

BASE_ADAPTER = "__base__"  # peft's name for "LoRA off" in a mixed-adapter batch
# Config fields that put a non-linear or scaling step between the LM head and the logits.
_LOGIT_TRANSFORMS = (
    "final_logit_softcapping",
    "logit_scale",
    "logits_scaling",
    "output_multiplier",
)


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


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside a peft wrapper (LoRA layers stay injected in it)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _cache_kwarg(forward) -> str:
    """Name of the cache kwarg: `cache` in transformers 5, `past_key_values` before."""
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


def cache_kwarg(model: torch.nn.Module) -> str:
    """The cache kwarg (and output field) of `model`'s forward, peft wrapper or not."""
    return _cache_kwarg(unwrap(model).forward)


def _eos_ids(model: torch.nn.Module) -> list[int]:
    """EOS ids from the model's generation config (int, list or None)."""
    gen_config = getattr(model, "generation_config", None)
    eos = getattr(gen_config, "eos_token_id", None)
    if eos is None:
        return []
    return [int(eos)] if isinstance(eos, int) else [int(e) for e in eos]


@torch.inference_mode()
def split_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Linear] | None:
    """(decoder, lm_head) if this model's logits are exactly `lm_head(decoder(x))`, else None.

    Checked three ways: the head is a plain `nn.Linear` (not LoRA-wrapped), the config names no
    logit soft-capping or scaling, and a probe forward gives the same logits both ways.
    """
    inner = unwrap(model)
    config = getattr(inner, "config", None)
    if any(getattr(config, name, None) not in (None, 1, 1.0) for name in _LOGIT_TRANSFORMS):
        return None
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    decoder = inner.get_decoder() if hasattr(inner, "get_decoder") else None
    if type(head) is not torch.nn.Linear or decoder is None or decoder is inner:
        return None
    device = head.weight.device
    probe = (torch.arange(5, device=device) * 7 + 3) % head.weight.shape[0]  # (5,) arbitrary ids
    try:
        full = model(input_ids=probe[None], use_cache=False).logits  # (1, 5, V)
        split = head(decoder(input_ids=probe[None], use_cache=False).last_hidden_state)
    except (TypeError, ValueError, AttributeError):
        return None
    loose = head.weight.dtype in (torch.float16, torch.bfloat16)
    tol = (1e-2 if loose else 1e-5) * max(1.0, float(full.abs().max()))
    if split.shape != full.shape or not torch.allclose(
        split.float(), full.float(), rtol=0, atol=tol
    ):
        return None
    return decoder, head


class ModelSource:
    """One causal LM with one KV cache. Plain generation uses this source alone."""

    def __init__(
        self,
        model: torch.nn.Module,
        vocab_size: int | None = None,
        name: str = "model",
        adapter_off: bool = False,
    ):
        """`vocab_size` = len(tokenizer); logits are cut to that many columns (padded rows
        dropped). `adapter_off`: run a peft model with its adapters disabled (the base weights)."""
        if vocab_size is not None:
            check_width(model, vocab_size, name)
        self.model = model.eval()
        self.vocab_size = vocab_size or output_width(model)
        self.eos_token_ids = _eos_ids(model)
        self.device = next(model.parameters()).device
        inner = unwrap(model)
        self._cache_kwarg = _cache_kwarg(inner.forward)
        self._has_logits_to_keep = "logits_to_keep" in inspect.signature(inner.forward).parameters
        self._cache: DynamicCache | None = None
        # (decoder, head, decoder's cache kwarg) once probed; None = no exact split; False = unprobed
        self._split: tuple[torch.nn.Module, torch.nn.Linear, str] | None | bool = False
        self.adapter_off = adapter_off
        self._tuner_layers: list[torch.nn.Module] | None = None

    def reset(self) -> None:
        """Start over with an empty KV cache."""
        self._cache = None

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Keep only these rows of the batch in the KV cache (the engine drops finished rows)."""
        if self._cache is not None:
            self._cache.batch_select_indices(rows.to(self.device))

    @contextmanager
    def _adapters_off(self):
        """The peft adapters switched off for one forward. Per layer (`enable_adapters`): peft's
        model-wide `disable_adapter()` walks the whole module tree each call, which cost more
        than the small model's forward itself on CPU (26 ms vs 42 ms, 55M Llama)."""
        if self._tuner_layers is None:
            from peft.tuners.tuners_utils import BaseTunerLayer

            self._tuner_layers = [m for m in self.model.modules() if isinstance(m, BaseTunerLayer)]
        switched = [m for m in self._tuner_layers if not m.disable_adapters]
        for layer in switched:
            layer.enable_adapters(False)
        try:
            yield
        finally:
            for layer in switched:
                layer.enable_adapters(True)

    @property
    def head(self) -> torch.nn.Linear | None:
        """The LM head if logits == head(final hidden state) for this model (probed once)."""
        if self._split is False:
            split = split_head(self.model)
            self._split = None if split is None else (*split, _cache_kwarg(split[0].forward))
        return self._split[1] if self._split else None

    def _run(
        self,
        module: torch.nn.Module,
        cache_kwarg: str,
        input_ids,
        attention_mask,
        position_ids,
        **kwargs: object,
    ):
        """Call `module` on new tokens with this source's cache (created on first use)."""
        if self._cache is None:
            self._cache = DynamicCache(config=self.model.config)
        with self._adapters_off() if self.adapter_off else nullcontext():
            return module(
                input_ids=input_ids.to(self.device),
                attention_mask=attention_mask.to(self.device),
                position_ids=position_ids.to(self.device),
                **{cache_kwarg: self._cache, "use_cache": True, **kwargs},
            )

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
        if self._has_logits_to_keep:
            extra["logits_to_keep"] = keep
        out = self._run(
            self.model, self._cache_kwarg, input_ids, attention_mask, position_ids, **extra
        )
        logits = out.logits  # (B, T or keep, V_model)
        if keep and logits.shape[1] != keep:
            logits = logits[:, -keep:]
        return logits[..., : self.vocab_size].float()  # (B, K, V)

    step = forward

    def hidden(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        keep: int = 1,
        adapter_names: list[str] | None = None,
    ) -> torch.Tensor:
        """Final hidden states (B, K, H) of the last `keep` positions (0 = all), extending the
        cache; the LM head is not run. Needs `self.head` (a probed split model).
        `adapter_names` selects a peft adapter per row (`BASE_ADAPTER` = off)."""
        if self.head is None:
            raise ValueError("hidden() needs a model whose logits are head(decoder(x))")
        decoder, _, cache_kwarg = self._split  # type: ignore[misc]
        # with adapter_names: the per-row adapter hooks peft's own forward installs
        hooks = (
            self.model._enable_peft_forward_hooks(adapter_names=adapter_names)
            if adapter_names is not None
            else nullcontext()
        )
        with hooks:
            out = self._run(decoder, cache_kwarg, input_ids, attention_mask, position_ids)
        states = out.last_hidden_state
        return states[:, -keep:] if keep else states  # (B, K, H)

    def head_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Float32 logits (B, K, vocab_size) of hidden states through the LM head, bias left
        out (it cancels in the expert - anti-expert difference this is used for)."""
        weight = self.head.weight[: self.vocab_size]  # type: ignore[union-attr]  (V, H)
        return torch.nn.functional.linear(hidden.to(weight.dtype), weight).float()


def _same_head(a: ModelSource, b: ModelSource) -> bool:
    """True if both sources split and their LM heads hold equal weights and biases."""
    head_a, head_b = a.head, b.head
    if head_a is None or head_b is None:
        return False
    if head_a.weight.data_ptr() == head_b.weight.data_ptr():
        return True
    tensors = [(head_a.weight, head_b.weight), (head_a.bias, head_b.bias)]
    for x, y in tensors:
        if (x is None) != (y is None):
            return False
        if x is not None and (x.shape != y.shape or x.device != y.device or not torch.equal(x, y)):
            return False
    return True


class _Proxy:
    """Eq. 1 on top of a base `ModelSource`; subclasses supply the small side's
    expert - anti-expert logit difference (`delta`) and the two terms apart (`parts`)."""

    base: ModelSource
    alpha: float

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
        delta = self.delta(input_ids, attention_mask, position_ids, keep)  # (B, K, V)
        return base + self.alpha * delta.to(base.device)

    def delta(self, input_ids, attention_mask, position_ids, keep: int) -> torch.Tensor:
        """Expert minus anti-expert logits (B, K, V)."""
        raise NotImplementedError

    def parts(
        self, input_ids, attention_mask, position_ids, keep: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(expert, anti-expert) logits (B, K, V) each; extends the small side's caches."""
        raise NotImplementedError


class ProxySource(_Proxy):
    """Proxy-tuning with three separate models, three KV caches (Liu et al., 2024, Eq. 1)."""

    def __init__(
        self,
        base: torch.nn.Module,
        expert: torch.nn.Module,
        anti_expert: torch.nn.Module,
        alpha: float = 1.0,
        vocab_size: int | None = None,
        head_on_difference: bool = True,
    ):
        """`vocab_size` = len(tokenizer) (checked against every model); defaults to the
        narrowest model's logit width. alpha = 0 skips the small models and equals the base.
        `head_on_difference`: if expert and anti-expert share their LM head, project
        (h+ - h-) once instead of each model's hidden state (see the module docstring)."""
        vocab_size = vocab_size or min(output_width(m) for m in (base, expert, anti_expert))
        self.base = ModelSource(base, vocab_size, "base model")
        self.expert = ModelSource(expert, vocab_size, "expert")
        self.anti_expert = ModelSource(anti_expert, vocab_size, "anti-expert")
        self.alpha = float(alpha)
        self.vocab_size = vocab_size
        self.eos_token_ids = self.base.eos_token_ids
        self.head_on_difference = head_on_difference and _same_head(self.expert, self.anti_expert)

    def reset(self) -> None:
        """Empty all three caches."""
        for source in (self.base, self.expert, self.anti_expert):
            source.reset()

    def delta(self, input_ids, attention_mask, position_ids, keep: int) -> torch.Tensor:
        """Expert minus anti-expert logits (B, K, V): one head projection when they share it."""
        if self.head_on_difference:
            plus = self.expert.hidden(input_ids, attention_mask, position_ids, keep)  # (B, K, H)
            minus = self.anti_expert.hidden(input_ids, attention_mask, position_ids, keep)
            return self.expert.head_logits(plus - minus.to(plus.device))
        expert, anti = self.parts(input_ids, attention_mask, position_ids, keep)
        return expert - anti.to(expert.device)

    def parts(
        self, input_ids, attention_mask, position_ids, keep: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(expert, anti-expert) logits (B, K, V), one forward each."""
        expert = self.expert.step(input_ids, attention_mask, position_ids, keep)
        return expert, self.anti_expert.step(input_ids, attention_mask, position_ids, keep)


class SharedLoraProxySource(ProxySource):
    """Proxy-tuning where expert and anti-expert are ONE peft LoRA model: adapter on = M+,
    adapter off = M-. One copy of the small weights in memory instead of two.

    Two ways to run the small side each step (`batch_rows`):
    - True (default): one forward of 2B rows, LoRA on for rows [0, B) and off for rows
      [B, 2B) (peft's mixed-batch `adapter_names`), one KV cache: the small weights are read
      once per step. Measured fastest on CPU for real Qwen2.5 pairs at batch 1 and 8
      (docs/proxy_decode.md), and the layout a memory-bound GPU favours.
    - False: two B-row forwards of the same model, adapter on then off, two KV caches. Costs
      the unmerged LoRA twice; kept for hardware where a 2B-row matmul is slow.
    Unless LoRA wraps the LM head, the head runs once per step on h+ - h- (module docstring).
    """

    def __init__(
        self,
        base: torch.nn.Module,
        lora_model: torch.nn.Module,
        alpha: float = 1.0,
        vocab_size: int | None = None,
        adapter_name: str | None = None,
        head_on_difference: bool = True,
        batch_rows: bool = True,
    ):
        """`lora_model` is a `peft.PeftModel` with an unmerged LoRA adapter on the
        anti-expert's weights; `adapter_name` (default: the active one) is made active."""
        if not hasattr(lora_model, "active_adapter") or not hasattr(lora_model, "disable_adapter"):
            from lmadapt.errors import LmadaptError

            raise LmadaptError("SharedLoraProxySource needs a peft LoRA model (PeftModel)")
        if adapter_name is not None and adapter_name != lora_model.active_adapter:
            lora_model.set_adapter(adapter_name)
        vocab_size = vocab_size or min(output_width(m) for m in (base, lora_model))
        self.base = ModelSource(base, vocab_size, "base model")
        self.expert = ModelSource(lora_model, vocab_size, "LoRA small model")
        self.anti_expert = ModelSource(lora_model, vocab_size, "LoRA small model", adapter_off=True)
        self.adapter_name = lora_model.active_adapter
        self.alpha = float(alpha)
        self.vocab_size = vocab_size
        self.eos_token_ids = self.base.eos_token_ids
        self.head_on_difference = head_on_difference and self.expert.head is not None
        self.batch_rows = batch_rows

    def _rows(self, input_ids, attention_mask, position_ids):
        """The batch doubled (expert rows, then anti-expert rows) and the per-row adapters."""
        batch = input_ids.shape[0]
        names = [self.adapter_name] * batch + [BASE_ADAPTER] * batch
        doubled = [torch.cat([t, t]) for t in (input_ids, attention_mask, position_ids)]
        return batch, doubled, names

    def delta(self, input_ids, attention_mask, position_ids, keep: int) -> torch.Tensor:
        """Expert minus anti-expert logits (B, K, V)."""
        if not self.batch_rows or not self.head_on_difference:
            return super().delta(input_ids, attention_mask, position_ids, keep)
        batch, doubled, names = self._rows(input_ids, attention_mask, position_ids)
        states = self.expert.hidden(*doubled, keep, adapter_names=names)  # (2B, K, H)
        return self.expert.head_logits(states[:batch] - states[batch:])

    def parts(
        self, input_ids, attention_mask, position_ids, keep: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(expert, anti-expert) logits (B, K, V)."""
        if not self.batch_rows:
            return super().parts(input_ids, attention_mask, position_ids, keep)
        batch, doubled, names = self._rows(input_ids, attention_mask, position_ids)
        both = self.expert.forward(*doubled, keep, adapter_names=names)  # (2B, K, V)
        return both[:batch], both[batch:]
