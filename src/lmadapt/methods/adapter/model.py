"""Find each block's attention-output and FFN-output projections in any HF model and wrap them.

No per-architecture code: the block stack is the model's longest ModuleList; inside a block,
the attention sub-module is the child whose name contains "attn"/"attention", its output
projection is the last Linear in it that maps back to the hidden size (o_proj, attention.output.dense,
out_proj), and the FFN output is the last Linear outside it that maps to the hidden size
(down_proj, output.dense, fc2). Checked on BERT, Llama, Qwen2 and Gemma3.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from lmadapt.errors import LmadaptError
from lmadapt.methods.adapter.layer import BottleneckAdapter, WithAdapter, replace_module
from lmadapt.models.load import find_layer_stack


@dataclass
class BlockSites:
    """Full module names (from the model root) of one block's sub-layer outputs."""

    attention: str  # the attention sub-module (holds the q/k/v projections)
    attention_out: str  # its output projection
    ffn_out: str  # the FFN's output projection


def _attention_child(block: nn.Module) -> str:
    names = [n for n, _ in block.named_children() if "attn" in n.lower() or "attention" in n.lower()]
    if not names:
        raise LmadaptError(f"cannot find the attention sub-module of {type(block).__name__}")
    return names[0]


def _last_linear(module: nn.Module, hidden: int, skip: str | None = None) -> str:
    found = [n for n, m in module.named_modules() if isinstance(m, nn.Linear) and m.out_features == hidden
             and (skip is None or not (n == skip or n.startswith(skip + ".")))]
    if not found:
        raise LmadaptError(f"cannot find an output projection to width {hidden} in {type(module).__name__}")
    return found[-1]


def _self_attention(block: nn.Module, attn_name: str) -> str:
    """The sub-module that owns the q/k/v projections (BERT: attention.self; Llama: self_attn)."""
    attn = block.get_submodule(attn_name)
    for name, module in attn.named_modules():
        children = {n for n, _ in module.named_children()}
        if {"q_proj", "v_proj"} <= children or {"query", "value"} <= children:
            return f"{attn_name}.{name}" if name else attn_name
    raise LmadaptError(f"cannot find the query/value projections in {type(attn).__name__}")


def block_sites(model: nn.Module) -> list[BlockSites]:
    """Where adapters go, for every transformer block."""
    stack = find_layer_stack(model)
    prefix = next(n for n, m in model.named_modules() if m is stack)
    hidden = hidden_size(model)
    sites = []
    for i, block in enumerate(stack):
        attn = _attention_child(block)
        attn_out = _last_linear(block.get_submodule(attn), hidden)
        ffn_out = _last_linear(block, hidden, skip=attn)
        base = f"{prefix}.{i}"
        sites.append(BlockSites(attention=f"{base}.{_self_attention(block, attn)}",
                                attention_out=f"{base}.{attn}.{attn_out}", ffn_out=f"{base}.{ffn_out}"))
    return sites


def hidden_size(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    config = getattr(config, "text_config", None) or config
    size = getattr(config, "hidden_size", None) or getattr(config, "d_model", None)
    if not size:
        raise LmadaptError(f"cannot read the hidden size of {type(model).__name__}")
    return int(size)


def add_adapters(model: nn.Module, placement: str, reduction: int, act: str) -> list[str]:
    """Wrap the sites of `placement` with zero-initialised adapters; returns the wrapped names."""
    hidden = hidden_size(model)
    wrapped = []
    for site in block_sites(model):
        names = [site.attention_out, site.ffn_out] if placement == "houlsby" else [site.ffn_out]
        for name in names:
            replace_module(model, name, WithAdapter(model.get_submodule(name),
                                                    BottleneckAdapter(hidden, reduction, act)))
            wrapped.append(name)
    return wrapped
