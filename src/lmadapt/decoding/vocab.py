"""Vocabulary checks for combining logits of several models.

Proxy-tuning adds logits column by column, so column i must mean the same token in every model.
We require identical tokenizers; embedding rows past the tokenizer (padding some checkpoints add,
e.g. Qwen2.5's 151,936 rows for 151,665 tokens) are sliced away by the logit sources.
"""

from __future__ import annotations

from typing import Any

import torch

from lmadapt.errors import LmadaptError

_SPECIAL_IDS = ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id")


def check_tokenizers_match(base: Any, other: Any, other_name: str = "small model") -> None:
    """Raise `LmadaptError` naming the first differing token unless both tokenizers agree.

    Compares the full token → id maps (added tokens included) and the special-token ids.
    """
    base_vocab, other_vocab = base.get_vocab(), other.get_vocab()
    if base_vocab != other_vocab:
        base_by_id = {i: t for t, i in base_vocab.items()}
        other_by_id = {i: t for t, i in other_vocab.items()}
        all_ids = sorted(set(base_by_id) | set(other_by_id))
        differing = [i for i in all_ids if base_by_id.get(i) != other_by_id.get(i)]
        token_id = differing[0] if differing else all_ids[-1]
        raise LmadaptError(
            f"tokenizers differ at id {token_id}: base has {base_by_id.get(token_id)!r}, "
            f"{other_name} has {other_by_id.get(token_id)!r} (base {len(base_vocab)} tokens, "
            f"{other_name} {len(other_vocab)}); proxy-tuning needs models from one family "
            "that share a tokenizer"
        )
    for attr in _SPECIAL_IDS:
        if getattr(base, attr, None) != getattr(other, attr, None):
            raise LmadaptError(
                f"tokenizers differ in {attr}: base {getattr(base, attr, None)}, "
                f"{other_name} {getattr(other, attr, None)}; use models that share a tokenizer"
            )


def output_width(model: torch.nn.Module) -> int:
    """Number of logit columns the model produces (its LM-head rows, padding included)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and getattr(head, "weight", None) is not None:
        return int(head.weight.shape[0])
    return int(model.config.vocab_size)


def check_width(model: torch.nn.Module, vocab_size: int, name: str) -> None:
    """Raise unless `model` has a logit column for each of the tokenizer's `vocab_size` tokens."""
    width = output_width(model)
    if width < vocab_size:
        raise LmadaptError(
            f"{name} produces {width} logits but the tokenizer has {vocab_size} tokens; "
            "resize its embeddings or use the tokenizer it was trained with"
        )
