"""Put UniPELT's gated parts into any HF model by wrapping modules (no architecture subclasses).

Sites come from `adapter.model.block_sites`: LoRA wraps the query and value projections found in
each block's self-attention, the prefix attaches to that self-attention module, and the adapter
wraps the FFN output projection (the placement UniPELT uses, after the feed-forward sub-layer).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lmadapt.errors import LmadaptError
from lmadapt.methods.adapter.layer import BottleneckAdapter, replace_module
from lmadapt.methods.adapter.model import block_sites, hidden_size
from lmadapt.methods.unipelt.config import UnipeltMethodConfig
from lmadapt.methods.unipelt.layer import (
    IMPLEMENTATION,
    Gate,
    GateContext,
    GatedAdapter,
    GatedLoraLinear,
    GatedPrefix,
    register_prefix_attention,
)

QV_NAMES = (("q_proj", "v_proj"), ("query", "value"))


def _qv(attention: nn.Module) -> tuple[str, str]:
    children = {n for n, _ in attention.named_children()}
    for pair in QV_NAMES:
        if set(pair) <= children:
            return pair
    raise LmadaptError(f"cannot find the query/value projections of {type(attention).__name__}")


def _heads(model: nn.Module) -> tuple[int, int]:
    """(key/value heads, head dim) from the model config."""
    config = getattr(model.config, "text_config", None) or model.config
    heads = config.num_attention_heads
    heads_kv = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or hidden_size(model) // heads
    return int(heads_kv), int(head_dim)


def _remember_mask(context: GateContext) -> Any:
    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        mask = kwargs.get("attention_mask")
        context.mask = mask if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None
    return hook


def _set_prefix_gate(module: nn.Module, args: tuple, kwargs: dict) -> None:
    hidden_states = kwargs.get("hidden_states", args[0] if args else None)
    module.unipelt_prefix.set_gate(hidden_states)


def add_unipelt(model: nn.Module, cfg: UnipeltMethodConfig) -> GateContext:
    """Wrap model in place with the enabled gated parts; the new parameters are trainable."""
    context = GateContext()
    hidden = hidden_size(model)
    heads_kv, head_dim = _heads(model)

    def gate() -> Gate | None:
        return Gate(hidden, context) if cfg.unipelt_gated else None

    for site in block_sites(model):
        attention = model.get_submodule(site.attention)
        if cfg.unipelt_lora:
            lora_gate = gate()  # one G_L per layer, shared by W_Q and W_V (Mao et al. §3)
            for name in _qv(attention):
                linear = attention.get_submodule(name)
                setattr(attention, name, GatedLoraLinear(linear, cfg.unipelt_lora_r, cfg.unipelt_lora_alpha,
                                                         lora_gate))
        if cfg.unipelt_prefix:
            attention.unipelt_prefix = GatedPrefix(heads_kv, head_dim, cfg.unipelt_prefix_tokens, gate())
            attention.register_forward_pre_hook(_set_prefix_gate, with_kwargs=True)
        if cfg.unipelt_adapter:
            base = model.get_submodule(site.ffn_out)
            adapter = BottleneckAdapter(hidden, cfg.unipelt_adapter_reduction, cfg.unipelt_adapter_act)
            replace_module(model, site.ffn_out, GatedAdapter(base, adapter, gate()))
    if cfg.unipelt_prefix:
        register_prefix_attention()
        _set_implementation(model, IMPLEMENTATION)
    model.register_forward_pre_hook(_remember_mask(context), with_kwargs=True)
    return context


def _set_implementation(model: nn.Module, name: str) -> None:
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "_attn_implementation"):
            config._attn_implementation = name
