"""The one scoring path: log p(continuation | prompt) under any logit source.

For continuation tokens y_1..y_L after prompt x, the score is
    sum_j log softmax(logits(x, y_<j))[y_j]
where the logits come from a *logit source*:
- a plain causal LM (`torch.nn.Module`): one forward, no KV cache, the model's own logit width
  and train/eval mode, gradients flowing when enabled. TaskModel's label scoring uses it, and so
  do RLHF's policy and reference (DPO's `sequence_logps`).
- a `LogitSource` (`decoding/sources.py`): a `ModelSource`, or proxy-tuning's combined logits
  (`ProxySource`, `SharedLoraProxySource`), so a classifier that picks the label with the
  highest score uses exactly the distribution that decoding samples from.

`token_logprobs` is the one log-softmax + gather; `continuation_logprobs` the one shift + mask +
sum over left-padded rows (`left_pad` / `position_ids_for` in `decoding/engine.py`). Every scorer
is a caller: `models/scoring.py` (label scoring, with its single-token and shared-prefix KV-cache
fast paths), proxy's classification, `sequence_logprobs` below, RLHF's `sequence_logps` (DPO) and
`token_logps` (PPO), seq2seq label scores in `TaskModel`.
"""

from __future__ import annotations

from typing import Any

import torch

from lmadapt.decoding.engine import as_source, left_pad, pad_id_of, position_ids_for
from lmadapt.decoding.sources import LogitSource
from lmadapt.errors import LmadaptError


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[target], in float32: logits (..., V), targets (..., K) → (..., K).

    K = 1 (targets[..., None]) scores each position's next token; K = L scores L candidate
    tokens at each position (single-token labels)."""
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.to(logits.device))


def next_token_logprobs(logits: torch.Tensor, token_ids: list[int]) -> torch.Tensor:
    """(B, L) log p(token_l) from last-position logits (B, V): single-token label scores."""
    targets = torch.tensor(token_ids, dtype=torch.long, device=logits.device)
    return token_logprobs(logits, targets.expand(logits.shape[0], -1))


def tail_mask(width: int, counts: list[int]) -> torch.Tensor:
    """(B, width) bool, True on each row's last counts[b] columns (left-padded continuations)."""
    positions = torch.arange(width).unsqueeze(0)  # (1, T)
    return positions >= (width - torch.tensor(counts).unsqueeze(1))  # (B, T)


def forward_last(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, keep: int) -> torch.Tensor:
    """Logits of the last `keep` positions, (B, keep, V); skips the LM head elsewhere when the
    model supports `logits_to_keep` (most HF causal LMs do)."""
    kwargs = {"input_ids": ids, "attention_mask": mask, "position_ids": position_ids_for(mask)}
    try:
        logits = model(**kwargs, logits_to_keep=keep).logits
    except TypeError:
        logits = model(**kwargs).logits
    return logits[:, -keep:]


def source_logits(source: torch.nn.Module | LogitSource, input_ids: torch.Tensor,
                  attention_mask: torch.Tensor, keep: int) -> torch.Tensor:
    """Logits (B, keep, V) of the last `keep` positions of left-padded rows (B, T).

    A plain model runs one forward on its own device (no cache); a `LogitSource` starts from
    empty caches and is emptied again afterwards."""
    if isinstance(source, torch.nn.Module):
        device = next(source.parameters()).device
        return forward_last(source, input_ids.to(device), attention_mask.to(device), keep)
    source.reset()
    try:
        return source.step(input_ids, attention_mask, position_ids_for(attention_mask), keep=keep)
    finally:
        source.reset()


def continuation_logprobs(source: torch.nn.Module | LogitSource, input_ids: torch.Tensor,
                          attention_mask: torch.Tensor, score_mask: torch.Tensor) -> torch.Tensor:
    """Sum over each row's scored tokens of log p(token | the tokens before it): (B,).

    input_ids, attention_mask, score_mask: (B, T), left-padded; score_mask marks the tokens to
    score (the continuation, a DPO response). Column 0 is never scored: nothing predicts it.
    Only the positions from the first scored column on go through the LM head.
    """
    width = input_ids.shape[1]
    scored = score_mask[:, 1:].any(dim=0).nonzero()  # columns 1.. holding a scored token
    if len(scored) == 0:
        return torch.zeros(input_ids.shape[0], device=input_ids.device)
    keep = width - int(scored[0])  # from the position predicting the first scored token on
    # Logits at position p predict token p + 1: the last keep - 1 tokens are the targets.
    logits = source_logits(source, input_ids, attention_mask, keep)  # (B, keep, V)
    targets = input_ids[:, width - keep + 1:]  # (B, keep - 1)
    token_lp = token_logprobs(logits[:, :-1], targets[..., None]).squeeze(-1)  # (B, keep - 1)
    return (token_lp * score_mask[:, width - keep + 1:].to(token_lp.device)).sum(-1)


@torch.inference_mode()
def sequence_logprobs(
    model: torch.nn.Module | LogitSource,
    tokenizer: Any,
    prompts: list[str],
    continuations: list[str],
    batch_size: int = 16,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probability (N,) and token count (N,) of each continuation after its prompt.

    Prompt and continuation are tokenized apart (the continuation without special tokens) and
    joined, so the continuation's tokens are exactly what gets scored. `model` is a causal LM
    (run as a `ModelSource` cut to the tokenizer's vocabulary) or a `LogitSource` such as a
    `ProxySource`.
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
        rows = slice(start, start + batch_size)
        input_ids, attention_mask = left_pad(
            [p + c for p, c in zip(prompt_ids[rows], cont_ids[rows], strict=True)], pad_id
        )
        score_mask = tail_mask(input_ids.shape[1], [len(c) for c in cont_ids[rows]])
        scores.append(continuation_logprobs(source, input_ids, attention_mask, score_mask).cpu())
    counts = torch.tensor([len(c) for c in cont_ids], dtype=torch.long)
    return torch.cat(scores), counts
