"""Packing: a micro-batch's examples laid end to end in rows of `max_length`, with no padding
between them.

Each example keeps its own positions (0, 1, ... restarting where it starts) and sees only its
own tokens: the rows go to the model with `position_ids` and no attention mask, and transformers
(5.x, `masking_utils`) reads a position that does not follow its left neighbour as the start of
a new sequence. With SDPA / eager attention it builds the block-diagonal causal mask from that
(B, 1, T, T), with flash-attention it runs the variable-length kernel on the segments (the
padding-free path). `check_packing` verifies, once per run, that the model in hand does so.

The loss reads the same targets as in padded rows: a segment's first token has no label (the
token before it belongs to another example), so no example predicts another's tokens, and the
mean over the micro-batch's target tokens is the unpacked batch's loss.
"""

from __future__ import annotations

import torch

from lmadapt.errors import LmadaptError
from lmadapt.models.lm_loss import eval_mode

Row = tuple[list[int], list[int]]  # token ids, labels (-100 = no loss)


def pack_bins(lengths: list[int], width: int) -> list[list[int]]:
    """Example indices per packed row: first-fit decreasing (longest first, each into the first
    row with room; ties keep the given order), so the rows depend only on the examples' order."""
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda j: -lengths[j]):
        for b, free in enumerate(room):
            if lengths[i] <= free:
                bins[b].append(i)
                room[b] -= lengths[i]
                break
        else:
            bins.append([i])
            room.append(width - lengths[i])
    return bins


def pack_rows(rows: list[Row], width: int, pad_id: int) -> dict[str, torch.Tensor]:
    """Packed rows (R, T), T = the fullest row's length (<= width): input_ids, position_ids,
    labels, and num_tokens (the real tokens, for throughput). A row's unused tail is padding
    with positions of its own (0, 1, ...: a segment nothing attends to) and no labels."""
    lengths = [len(ids) for ids, _ in rows]
    width = max(width, *lengths)
    bins = pack_bins(lengths, width)
    used = max(sum(lengths[i] for i in members) for members in bins)
    input_ids = torch.full((len(bins), used), pad_id, dtype=torch.long)
    labels = torch.full((len(bins), used), -100, dtype=torch.long)
    positions = torch.zeros((len(bins), used), dtype=torch.long)
    for r, members in enumerate(bins):
        at = 0
        for i in members:
            ids, row_labels = rows[i]
            n = len(ids)
            input_ids[r, at:at + n] = torch.tensor(ids, dtype=torch.long)
            labels[r, at + 1:at + n] = torch.tensor(row_labels[1:], dtype=torch.long)  # first token: none
            positions[r, at:at + n] = torch.arange(n)
            at += n
        positions[r, at:] = torch.arange(used - at)
    return {"input_ids": input_ids, "position_ids": positions, "labels": labels,
            "num_tokens": torch.tensor(sum(lengths))}


@torch.no_grad()
def check_packing(model: torch.nn.Module, inner: torch.nn.Module, input_ids: torch.Tensor) -> None:
    """Raise unless `model` keeps packed examples apart: the logits of a 4-token sequence packed
    after a 3-token one must equal those of the 4 tokens alone (eval mode, dropout off). `inner`
    is the unwrapped model, for the message."""
    ids = input_ids.flatten()
    ids = ids.repeat(-(-7 // len(ids)))[:7]  # any 7 token ids of the batch
    second = ids[3:]  # packed after ids[:3]
    packed_positions = torch.cat([torch.arange(3), torch.arange(4)]).to(ids.device)
    with eval_mode(model):
        packed = model(input_ids=ids[None], position_ids=packed_positions[None], use_cache=False).logits[0, 3:]
        alone = model(input_ids=second[None], position_ids=torch.arange(4, device=ids.device)[None],
                      use_cache=False).logits[0]
    loose = packed.dtype in (torch.float16, torch.bfloat16)
    tol = (5e-2 if loose else 1e-4) * max(1.0, float(alone.abs().max()))
    if not torch.allclose(packed.float(), alone.float(), rtol=0, atol=tol):
        config = getattr(inner, "config", None)
        impl = getattr(config, "_attn_implementation", None) or "?"
        raise LmadaptError(f"packing=true: {type(inner).__name__} (attention {impl}) lets packed examples "
                           "see each other; leave packing off for this model")
