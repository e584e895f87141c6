"""Causal-LM label scoring: log p(label | prompt), summed (or averaged) over the label's tokens.

Classification with a causal LM never parses free text: each candidate label is scored and the
most likely one wins. The same token layout (prompt tokens, then label tokens) is the training
input, with the loss on the label tokens only.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase


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


def pad_left(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad to (B, T) input ids and attention mask."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
        mask[row, width - len(seq):] = 1
    return ids, mask


def continuation_logprobs(logits: torch.Tensor, input_ids: torch.Tensor,
                          n_cont: list[int]) -> torch.Tensor:
    """Sum of log p(token_t | tokens_<t) over each row's last n_cont tokens (left-padded rows).

    logits: (B, K, V) for the last K positions of input_ids (B, T), K <= T (K = T: all of them).
    Returns (B,).
    """
    keep = logits.shape[1]
    logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (B, K-1, V): predicts t+1
    targets = input_ids[:, input_ids.shape[1] - keep + 1:].unsqueeze(-1)  # (B, K-1, 1)
    token_lp = logprobs.gather(-1, targets).squeeze(-1)  # (B, T-1)
    width = token_lp.shape[1]
    positions = torch.arange(width, device=token_lp.device).unsqueeze(0)  # (1, T-1)
    counts = torch.tensor(n_cont, device=token_lp.device).unsqueeze(1)  # (B, 1)
    in_cont = positions >= (width - counts)  # last n tokens of each row
    return (token_lp * in_cont).sum(dim=1)


def position_ids_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that start at 0 on each row's first real token (left padding)."""
    return (mask.cumsum(dim=1) - 1).clamp(min=0)


def forward_last(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, keep: int) -> torch.Tensor:
    """Logits of the last `keep` positions, (B, keep, V); skips the LM head elsewhere when the
    model supports `logits_to_keep` (most HF causal LMs do)."""
    kwargs = {"input_ids": ids, "attention_mask": mask, "position_ids": position_ids_from_mask(mask)}
    try:
        logits = model(**kwargs, logits_to_keep=keep).logits
    except TypeError:
        logits = model(**kwargs).logits
    return logits[:, -keep:]


def _batches_by_length(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (less padding), longest first."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


@torch.inference_mode()
def score_continuations(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase,
                        prompts: list[str], continuations: list[str], max_length: int,
                        batch_size: int = 16, normalize: bool = False) -> torch.Tensor:
    """log p(continuation_i | prompt_i) for each pair i; mean per token when normalize."""
    device = next(model.parameters()).device
    pairs = [encode_pair(tokenizer, p, c, max_length) for p, c in zip(prompts, continuations, strict=True)]
    scores = torch.zeros(len(pairs))
    for batch in _batches_by_length([len(ids) for ids, _ in pairs], batch_size):
        ids, mask = pad_left([pairs[i][0] for i in batch], tokenizer.pad_token_id)
        n_cont = [pairs[i][1] for i in batch]
        logits = forward_last(model, ids.to(device), mask.to(device), max(n_cont) + 1)  # (B, K, V)
        lp = continuation_logprobs(logits, ids.to(device), n_cont).cpu()
        if normalize:
            lp = lp / torch.tensor(n_cont)
        scores[batch] = lp.float()
    return scores


@torch.inference_mode()
def score_single_tokens(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: list[str],
                        token_ids: list[int], max_length: int, batch_size: int = 16) -> torch.Tensor:
    """(N, L) log p(token_l | prompt_n): one forward per prompt when every label is one token."""
    device = next(model.parameters()).device
    encoded = [tokenizer(p, add_special_tokens=True)["input_ids"][-(max_length - 1):] for p in prompts]
    scores = torch.zeros(len(prompts), len(token_ids))
    for batch in _batches_by_length([len(e) for e in encoded], batch_size):
        ids, mask = pad_left([encoded[i] for i in batch], tokenizer.pad_token_id)
        logits = forward_last(model, ids.to(device), mask.to(device), 1)[:, -1]  # (B, V)
        scores[batch] = torch.log_softmax(logits.float(), dim=-1)[:, token_ids].cpu()
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
    import copy

    device = next(model.parameters()).device
    prefix_ids = tokenizer(prefix, add_special_tokens=True)["input_ids"]
    cache = model(input_ids=torch.tensor([prefix_ids], device=device), use_cache=True).past_key_values
    room = max(1, max_length - len(prefix_ids))
    encoded = [tokenizer(q, add_special_tokens=False)["input_ids"][-room:] for q in queries]
    scores = torch.zeros(len(queries), len(token_ids))
    for batch in _batches_by_length([len(e) for e in encoded], batch_size):
        ids, mask = pad_left([encoded[i] for i in batch], tokenizer.pad_token_id)
        rows = len(batch)
        batch_cache = copy.deepcopy(cache)
        batch_cache.batch_repeat_interleave(rows)
        full_mask = torch.cat([torch.ones(rows, len(prefix_ids), dtype=mask.dtype), mask], dim=1)
        positions = len(prefix_ids) + position_ids_from_mask(mask)  # (B, T) continue after the prefix
        logits = model(input_ids=ids.to(device), attention_mask=full_mask.to(device),
                       position_ids=positions.to(device), past_key_values=batch_cache,
                       use_cache=True, logits_to_keep=1).logits[:, -1]  # (B, V)
        scores[batch] = torch.log_softmax(logits.float(), dim=-1)[:, token_ids].cpu()
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
