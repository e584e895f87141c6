"""Causal-LM label scoring: log p(label | prompt), summed (or averaged) over the label's tokens.

Classification with a causal LM never parses free text: each candidate label is scored and the
most likely one wins. The same token layout (prompt tokens, then label tokens) is the training
input, with the loss on the label tokens only. The log-softmax / gather / mask is
`lmadapt.decoding.scoring` (the one scoring path); this module lays out prompts and labels and
keeps the two fast paths: one forward per prompt for single-token labels, and a shared prefix
(fixed ICL demonstrations) run once through the KV cache.
"""

from __future__ import annotations

import copy

import torch
from transformers import PreTrainedTokenizerBase

from lmadapt.decoding.engine import left_pad, position_ids_for
from lmadapt.decoding.scoring import (
    continuation_logprobs,
    next_token_logprobs,
    source_logits,
    tail_mask,
)
from lmadapt.decoding.sources import cache_kwarg


def encode_pair(tokenizer: PreTrainedTokenizerBase, prompt: str, continuation: str,
                max_length: int) -> tuple[list[int], int]:
    """Token ids of prompt + continuation and the number of continuation tokens.

    Prompt and continuation are tokenized apart so the continuation's tokens are well defined;
    the prompt is cut from the left when the pair is longer than max_length.
    """
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    cont_ids = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    if not cont_ids:
        raise ValueError(f"continuation {continuation!r} has no tokens")
    keep = max(1, max_length - len(cont_ids))
    prompt_ids = prompt_ids[-keep:]
    return prompt_ids + cont_ids, len(cont_ids)


def _batches_by_length(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (less padding), longest first."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


@torch.inference_mode()
def score_continuations(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase,
                        prompts: list[str], continuations: list[str], max_length: int,
                        batch_size: int = 16, normalize: bool = False) -> torch.Tensor:
    """log p(continuation_i | prompt_i) for each pair i; mean per token when normalize."""
    pairs = [encode_pair(tokenizer, p, c, max_length) for p, c in zip(prompts, continuations, strict=True)]
    scores = torch.zeros(len(pairs))
    for batch in _batches_by_length([len(ids) for ids, _ in pairs], batch_size):
        ids, mask = left_pad([pairs[i][0] for i in batch], tokenizer.pad_token_id)
        n_cont = [pairs[i][1] for i in batch]
        lp = continuation_logprobs(model, ids, mask, tail_mask(ids.shape[1], n_cont)).cpu()
        if normalize:
            lp = lp / torch.tensor(n_cont)
        scores[batch] = lp.float()
    return scores


@torch.inference_mode()
def score_single_tokens(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: list[str],
                        token_ids: list[int], max_length: int, batch_size: int = 16) -> torch.Tensor:
    """(N, L) log p(token_l | prompt_n): one forward per prompt when every label is one token."""
    encoded = [tokenizer(p, add_special_tokens=True)["input_ids"][-(max_length - 1):] for p in prompts]
    scores = torch.zeros(len(prompts), len(token_ids))
    for batch in _batches_by_length([len(e) for e in encoded], batch_size):
        ids, mask = left_pad([encoded[i] for i in batch], tokenizer.pad_token_id)
        logits = source_logits(model, ids, mask, 1)[:, -1]  # (B, V)
        scores[batch] = next_token_logprobs(logits, token_ids).cpu()
    return scores


@torch.inference_mode()
def score_single_tokens_after_prefix(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, prefix: str,
                                     queries: list[str], token_ids: list[int], max_length: int,
                                     batch_size: int = 16) -> torch.Tensor:
    """(N, L) log p(token_l | prefix + query_n), running the shared prefix once (KV cache).

    The prefix's keys/values are computed once and repeated over each batch; each row is then
    `[prefix][left padding][query]`, masked so pads are never attended to. Equals scoring the
    concatenated text whenever the tokenizer splits prefix and query at their boundary.
    """
    device = next(model.parameters()).device
    kwarg = cache_kwarg(model)  # `cache` (transformers 5) or `past_key_values`: kwarg and output
    prefix_ids = tokenizer(prefix, add_special_tokens=True)["input_ids"]
    cache = getattr(model(input_ids=torch.tensor([prefix_ids], device=device), use_cache=True), kwarg)
    room = max(1, max_length - len(prefix_ids))
    encoded = [tokenizer(q, add_special_tokens=False)["input_ids"][-room:] for q in queries]
    scores = torch.zeros(len(queries), len(token_ids))
    for batch in _batches_by_length([len(e) for e in encoded], batch_size):
        ids, mask = left_pad([encoded[i] for i in batch], tokenizer.pad_token_id)
        rows = len(batch)
        batch_cache = copy.deepcopy(cache)
        batch_cache.batch_repeat_interleave(rows)
        full_mask = torch.cat([torch.ones(rows, len(prefix_ids), dtype=mask.dtype), mask], dim=1)
        positions = len(prefix_ids) + position_ids_for(mask)  # (B, T) continue after the prefix
        logits = model(input_ids=ids.to(device), attention_mask=full_mask.to(device),
                       position_ids=positions.to(device), **{kwarg: batch_cache},
                       use_cache=True, logits_to_keep=1).logits[:, -1]  # (B, V)
        scores[batch] = next_token_logprobs(logits, token_ids).cpu()
    return scores


def single_token_labels(tokenizer: PreTrainedTokenizerBase, labels: list[str], label_prefix: str) -> list[int] | None:
    """Each label's only token id, or None when some label needs several tokens."""
    label_ids = [tokenizer(label_prefix + label, add_special_tokens=False)["input_ids"] for label in labels]
    return [ids[0] for ids in label_ids] if all(len(ids) == 1 for ids in label_ids) else None


def classify_by_likelihood(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase,
                           prompts: list[str], labels: list[str], label_prefix: str,
                           max_length: int, batch_size: int = 16,
                           normalize: bool = False) -> torch.Tensor:
    """(N, L) label log-likelihoods for N prompts and L candidate labels."""
    token_ids = single_token_labels(tokenizer, labels, label_prefix)
    if token_ids is not None:  # same token layout as encode_pair, L times cheaper
        return score_single_tokens(model, tokenizer, prompts, token_ids, max_length, batch_size)
    flat_prompts = [p for p in prompts for _ in labels]
    flat_labels = [label_prefix + label for _ in prompts for label in labels]
    scores = score_continuations(model, tokenizer, flat_prompts, flat_labels, max_length,
                                 batch_size, normalize)
    return scores.view(len(prompts), len(labels))
