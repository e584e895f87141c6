"""Score continuations under any `LogitSource`, e.g. label log-likelihoods under proxy-tuning.

For continuation tokens y_1..y_L after prompt x, the score is
    sum_j log softmax(logits(x, y_<j))[y_j]
where logits are the source's (combined, for proxies) logits — so a classifier that picks the
label with the highest score uses exactly the distribution that decoding samples from.
"""

from __future__ import annotations

from typing import Any

import torch

from lmadapt.decoding.engine import as_source, left_pad, pad_id_of, position_ids_for
from lmadapt.decoding.sources import LogitSource
from lmadapt.errors import LmadaptError


@torch.inference_mode()
def _score_batch(
    source: LogitSource, prompt_ids: list[list[int]], cont_ids: list[list[int]], pad_id: int
) -> torch.Tensor:
    """Summed log-probs (B,) of each continuation given its prompt, in one forward."""
    cont_max = max(len(c) for c in cont_ids)
    if cont_max == 0:
        return torch.zeros(len(cont_ids))
    input_ids, attention_mask = left_pad(
        [p + c for p, c in zip(prompt_ids, cont_ids, strict=True)], pad_id
    )
    source.reset()
    # Logits at position p predict token p + 1; the last cont_max + 1 positions cover every
    # continuation token (continuations sit right-aligned because of left padding).
    logits = source.step(
        input_ids, attention_mask, position_ids_for(attention_mask), keep=cont_max + 1
    )
    log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (B, Lmax, V)
    targets = input_ids[:, -cont_max:].to(log_probs.device)  # (B, Lmax)
    token_lp = log_probs.gather(-1, targets[..., None]).squeeze(-1)  # (B, Lmax)
    lengths = torch.tensor([len(c) for c in cont_ids], device=token_lp.device)  # (B,)
    offsets = torch.arange(cont_max, device=token_lp.device)  # (Lmax,)
    in_cont = offsets[None, :] >= (cont_max - lengths)[:, None]  # (B, Lmax)
    source.reset()
    return (token_lp * in_cont).sum(-1).cpu()


def sequence_logprobs(
    model: torch.nn.Module | LogitSource,
    tokenizer: Any,
    prompts: list[str],
    continuations: list[str],
    batch_size: int = 16,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probability (N,) and token count (N,) of each continuation after its prompt.

    Prompt and continuation are tokenized apart (the continuation without special tokens) and
    joined, so the continuation's tokens are exactly what gets scored. `model` is a causal LM or
    a `LogitSource` such as a `ProxySource`.
    """
    if len(prompts) != len(continuations):
        raise LmadaptError(
            f"got {len(prompts)} prompts but {len(continuations)} continuations; pass one each"
        )
    source = as_source(model, tokenizer)
    pad_id = pad_id_of(tokenizer)
    prompt_ids = [tokenizer(p)["input_ids"] for p in prompts]
    cont_ids = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in continuations]
    if any(not ids for ids in prompt_ids):
        raise LmadaptError(
            "a prompt encodes to zero tokens; the first continuation token needs context"
        )
    scores = []
    for start in range(0, len(prompts), batch_size):
        end = start + batch_size
        scores.append(_score_batch(source, prompt_ids[start:end], cont_ids[start:end], pad_id))
    counts = torch.tensor([len(c) for c in cont_ids], dtype=torch.long)
    return torch.cat(scores), counts
