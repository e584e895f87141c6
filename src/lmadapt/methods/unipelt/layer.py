"""UniPELT's gated parts (Mao et al., 2022, §3, Fig. 1): LoRA, prefix and adapter, each scaled by
its own gate G = σ(W_g x) averaged over the real (non-padding) tokens of each sequence.

    LoRA (on W_Q, W_V):  y = W x + G_L · (α/r) B A x
    prefix:              attention over [G_P · P_K ; K] and [G_P · P_V ; V]
    adapter (after FFN): h ← h + G_A · U f(D h)

With `gated=False` every G is the constant 1, i.e. the plain (ungated) sum of the three parts.

How the prefix gets into attention (transformers 5.24, any model using the attention interface:
BERT, Llama, Qwen2, Gemma3): we register an attention implementation, "lmadapt_prefix", that
prepends each layer's gated prefix keys/values to the (post-RoPE) keys/values it receives and
extends the attention mask with always-visible columns, then calls SDPA. The prefix keys carry
no position (as in prefix tuning with past key values) and are never stored in the KV cache,
so training, label scoring and cached generation all see them the same way.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from lmadapt.methods.adapter.layer import BottleneckAdapter

IMPLEMENTATION = "lmadapt_prefix"


class GateContext:
    """The current batch's (B, T) attention mask, shared by every gate (set by a pre-hook)."""

    def __init__(self) -> None:
        self.mask: torch.Tensor | None = None


class Gate(nn.Module):
    """G = mean over real tokens of σ(W_g x_t + b): (B, T, d) → (B, 1, 1)."""

    def __init__(self, hidden: int, context: GateContext) -> None:
        super().__init__()
        self.proj = nn.Linear(hidden, 1)
        self.context = [context]  # a list, so the context is not registered as a sub-module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.proj(x))  # (B, T, 1)
        mask = self.context[0].mask
        if mask is not None and mask.shape == x.shape[:2]:
            weights = mask.to(gate.dtype).unsqueeze(-1)  # (B, T, 1)
            return (gate * weights).sum(1, keepdim=True) / weights.sum(1, keepdim=True).clamp(min=1)
        return gate.mean(dim=1, keepdim=True)  # (B, 1, 1)


def gate_or_one(gate: Gate | None, x: torch.Tensor) -> torch.Tensor | float:
    return gate(x) if gate is not None else 1.0


class GatedLoraLinear(nn.Module):
    """y = W x + G_L · (α/r) B A x (Hu et al., 2021, Eq. 3, with UniPELT's gate)."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, gate: Gate | None) -> None:
        super().__init__()
        self.base = base
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features))  # A: (r, d_in)
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r))  # B: (d_out, r), zero at init
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.scaling = alpha / r
        self.gate = gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, d_in)
        update = (x @ self.lora_A.T) @ self.lora_B.T * self.scaling  # (B, T, d_out)
        return self.base(x) + gate_or_one(self.gate, x) * update


class GatedAdapter(nn.Module):
    """Wraps the FFN output projection: h = base(x); h + G_A · U f(D h)."""

    def __init__(self, base: nn.Module, adapter: BottleneckAdapter, gate: Gate | None) -> None:
        super().__init__()
        self.base = base
        self.adapter = adapter
        self.gate = gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.base(x)  # (B, T, d)
        return h + gate_or_one(self.gate, h) * self.adapter(h)


class GatedPrefix(nn.Module):
    """Per-layer prefix P_K, P_V: (H_kv, P, D); the gate is computed from the attention's input."""

    def __init__(self, heads_kv: int, head_dim: int, tokens: int, gate: Gate | None) -> None:
        super().__init__()
        self.keys = nn.Parameter(torch.randn(heads_kv, tokens, head_dim) * 0.02)
        self.values = nn.Parameter(torch.randn(heads_kv, tokens, head_dim) * 0.02)
        self.gate = gate
        self.current: torch.Tensor | float = 1.0  # G_P of the running batch, (B, 1, 1)

    def set_gate(self, hidden_states: torch.Tensor) -> None:
        self.current = gate_or_one(self.gate, hidden_states)

    def extend(self, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None,
               causal: bool, q_len: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """[G·P_K; K], [G·P_V; V] and the mask with P visible columns in front."""
        batch, tokens = key.shape[0], self.keys.shape[1]
        gate = self.current
        if isinstance(gate, torch.Tensor):
            gate = gate.view(batch, 1, 1, 1)
        prefix_k = (gate * self.keys.unsqueeze(0)).to(key.dtype).expand(batch, -1, -1, -1)  # (B, H, P, D)
        prefix_v = (gate * self.values.unsqueeze(0)).to(value.dtype).expand(batch, -1, -1, -1)
        if mask is None and causal and q_len > 1:  # SDPA's implicit causal mask, made explicit
            k_len = key.shape[2]
            rows = torch.arange(q_len, device=key.device).unsqueeze(1) + (k_len - q_len)
            mask = (torch.arange(k_len, device=key.device).unsqueeze(0) <= rows)[None, None]  # (1,1,Tq,Tk)
        if mask is not None:
            mask = mask[..., :key.shape[2]]
            visible = torch.ones if mask.dtype == torch.bool else torch.zeros
            pad = visible((*mask.shape[:-1], tokens), dtype=mask.dtype, device=mask.device)
            mask = torch.cat([pad, mask], dim=-1)  # (B|1, 1, Tq, P+Tk)
        return torch.cat([prefix_k, key], dim=2), torch.cat([prefix_v, value], dim=2), mask


def prefix_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, **kwargs: Any) -> tuple[torch.Tensor, Any]:
    """SDPA over the layer's keys/values with its gated prefix in front (query: (B, H, Tq, D))."""
    prefix = getattr(module, "unipelt_prefix", None)
    if prefix is not None:
        causal = bool(kwargs.pop("is_causal", getattr(module, "is_causal", False)))
        key, value, attention_mask = prefix.extend(key, value, attention_mask, causal, query.shape[2])
        kwargs["is_causal"] = False
    return ALL_ATTENTION_FUNCTIONS["sdpa"](module, query, key, value, attention_mask, **kwargs)


def register_prefix_attention() -> None:
    """Make "lmadapt_prefix" a valid attn_implementation (eager masks are always materialised)."""
    AttentionInterface.register(IMPLEMENTATION, prefix_attention)
    AttentionMaskInterface.register(IMPLEMENTATION, eager_mask)
