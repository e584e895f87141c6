"""Default target modules per architecture, found from the model's own module names.

LoRA / UniPELT-LoRA adapt the query and value projections (Hu et al., 2021, §7.1);
(IA)³ rescales keys, values and the input of the FFN's second projection
(Liu et al., 2022, §3.3, Eq. 4-5: l_k ⊙ K, l_v ⊙ V, (l_ff ⊙ γ(W_1 x)) W_2).
"""

from __future__ import annotations

import re

import torch

from lmadapt.errors import LmadaptError

# (query, key, value, ffn-second-projection) leaf-name patterns, tried in order.
# Each entry is a regex matched against the module's full dotted name.
FAMILIES: list[dict[str, str]] = [
    # Llama, Qwen2, Gemma, Mistral, Phi-3-like (q_proj/k_proj/v_proj, mlp.down_proj)
    {"q": r".*\.q_proj", "k": r".*\.k_proj", "v": r".*\.v_proj", "ffn_out": r".*\.down_proj"},
    # BERT, RoBERTa, MiniLM (attention.self.query/key/value, layer.N.output.dense)
    {"q": r".*\.attention\.self\.query", "k": r".*\.attention\.self\.key",
     "v": r".*\.attention\.self\.value", "ffn_out": r".*layer\.\d+\.output\.dense"},
    # OPT (self_attn.q_proj ..., fc2) — q/k/v covered above, FFN differs
    {"q": r".*\.q_proj", "k": r".*\.k_proj", "v": r".*\.v_proj", "ffn_out": r".*\.fc2"},
    # T5 (SelfAttention.q/k/v, DenseReluDense.wo)
    {"q": r".*\.q", "k": r".*\.k", "v": r".*\.v", "ffn_out": r".*\.wo"},
]


def _linear_names(model: torch.nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)]


def _family(model: torch.nn.Module, roles: tuple[str, ...]) -> dict[str, str]:
    names = _linear_names(model)
    for family in FAMILIES:
        if all(any(re.fullmatch(family[r], n) for n in names) for r in roles):
            return family
    raise LmadaptError(f"cannot find the {'/'.join(roles)} projections of {type(model).__name__}; "
                       "name the target modules yourself (e.g. lora_target_modules=q_proj,v_proj)")


def as_regex(patterns: list[str]) -> str:
    return "(" + "|".join(patterns) + ")"


def qv_targets(model: torch.nn.Module) -> str:
    """A peft target_modules regex for the query and value projections of every block."""
    family = _family(model, ("q", "v"))
    return as_regex([family["q"], family["v"]])


def ia3_targets(model: torch.nn.Module) -> tuple[str, str]:
    """(target_modules, feedforward_modules) regexes for (IA)³: K, V and the FFN's W_2."""
    family = _family(model, ("k", "v", "ffn_out"))
    return as_regex([family["k"], family["v"], family["ffn_out"]]), family["ffn_out"]


def matching_modules(model: torch.nn.Module, pattern: str) -> list[str]:
    """Full names of the Linear modules whose name fully matches pattern."""
    return [n for n in _linear_names(model) if re.fullmatch(pattern, n)]
