"""Bottleneck adapter layers and the wrapper that adds one to an existing sub-module.

Houlsby et al. (2019), §2.1 / Fig. 2: the adapter sits on a sub-layer's output, before the
residual add: h ← h + U f(D h), D: (m, d), U: (d, m), m = d / reduction. U starts at zero, so
the adapted model equals the base model at initialisation ("near-identity").
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

ACT = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}


class BottleneckAdapter(nn.Module):
    """delta(h) = U f(D h); the caller adds h (and, in UniPELT, a gate)."""

    def __init__(self, hidden: int, reduction: int, act: str = "relu") -> None:
        super().__init__()
        bottleneck = max(1, hidden // reduction)
        self.down = nn.Linear(hidden, bottleneck)  # D: (m, d)
        self.act = ACT[act]()
        self.up = nn.Linear(bottleneck, hidden)  # U: (d, m)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # h: (B, T, d) → (B, T, d)
        return self.up(self.act(self.down(h)))


class WithAdapter(nn.Module):
    """Wraps a sub-module (e.g. o_proj, down_proj): out = base(x); out + adapter(out)."""

    def __init__(self, base: nn.Module, adapter: BottleneckAdapter) -> None:
        super().__init__()
        self.base = base
        self.adapter = adapter

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        out = self.base(*args, **kwargs)
        if isinstance(out, tuple):  # modules that return (hidden, extras...)
            return (out[0] + self.adapter(out[0]), *out[1:])
        return out + self.adapter(out)  # (B, T, d)


def replace_module(root: nn.Module, name: str, new: nn.Module) -> None:
    """Set root.<name> (a dotted path) to new."""
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)
