"""A causal LM's training loss with logits only where the loss reads them.

The model's own loss runs the LM head on every position, (B, T, H) -> (B, T, V), although only
the K target positions (labels != -100) count; in completion-only training K is a small part of
B x T, and the (B, T, V) logits (upcast to float32 for the cross-entropy) are often the largest
tensor of the step. Here the final hidden states of the positions that predict a target are
gathered first, (K, H), and the head and cross-entropy run on them alone:

    loss = sum_k CE(head(h_k), y_k) / K

With `chunk` > 0 they run `chunk` targets at a time, each chunk recomputed in the backward pass
(activation checkpointing), so at most (chunk, V) logits exist at once whatever B x T is.

The head is hooked, not called apart: the model runs its usual forward (through peft, DDP or
FSDP wrappers, which must see every forward), and a pre-hook on the LM head computes the loss
from the head's input and hands the head an empty sequence. Whether `logits == f(head(input))`
holds, with f the known final transforms (Gemma's soft-capping, Cohere's logit scale, Granite's
logits scaling), is probed once on the model itself; where it does not (another transform, a
head the forward never calls), the caller keeps the full-logits loss.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch.utils.checkpoint import checkpoint

from lmadapt.decoding.sources import unwrap

Transform = Callable[[torch.Tensor], torch.Tensor]


def output_head(model: torch.nn.Module) -> torch.nn.Module | None:
    """The LM head module of a (peft-wrapped) causal LM, LoRA layer included; None if it has none."""
    inner = unwrap(model)
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    return head if isinstance(head, torch.nn.Module) else None


def logit_transform(model: torch.nn.Module) -> Transform:
    """The step transformers models put between the head and the logits, read from the config:
    soft-capping c * tanh(z / c) (Gemma 2/3), z * logit_scale (Cohere), z / logits_scaling
    (Granite); the identity for most models."""
    config = getattr(unwrap(model), "config", None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    cap = getattr(text, "final_logit_softcapping", None)
    scale = getattr(text, "logit_scale", None)
    divide = getattr(text, "logits_scaling", None)

    def transform(logits: torch.Tensor) -> torch.Tensor:
        if isinstance(scale, (int, float)):
            logits = logits * scale
        if isinstance(divide, (int, float)):
            logits = logits / divide
        if isinstance(cap, (int, float)) and cap > 0:
            logits = torch.tanh(logits / cap) * cap
        return logits

    return transform


def _first_input(args: tuple, kwargs: dict) -> torch.Tensor | None:
    value = args[0] if args else kwargs.get("input")
    return value if isinstance(value, torch.Tensor) else None


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Dropout off for a probe forward, so it draws no random numbers (a resumed run's dropout
    masks must match the uninterrupted run's) and compares like with like."""
    training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training)


@torch.no_grad()
def head_reproduces_logits(model: torch.nn.Module, head: torch.nn.Module, input_ids: torch.Tensor) -> bool:
    """Whether the model's logits are exactly transform(head(x)) for the x its forward hands the
    head: one forward of `input_ids` (1, T) with the head's input captured."""
    seen: list[torch.Tensor] = []

    def capture(_module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        if (hidden := _first_input(args, kwargs)) is not None:
            seen.append(hidden)

    handle = head.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        with eval_mode(model):
            logits = model(input_ids=input_ids, use_cache=False).logits  # (1, T, V)
        if len(seen) != 1 or seen[0].shape[:2] != input_ids.shape:
            return False
        # outside the model's call: a head whose weights exist only inside it (DeepSpeed ZeRO-3
        # gathers them per call) fails here, and the loss keeps the full-logits path
        again = logit_transform(model)(head.forward(seen[0]))
    except (TypeError, ValueError, AttributeError, RuntimeError):
        return False
    finally:
        handle.remove()
    loose = again.dtype in (torch.float16, torch.bfloat16)
    tol = (1e-2 if loose else 1e-5) * max(1.0, float(logits.abs().max()))
    return again.shape == logits.shape and torch.allclose(again.float(), logits.float(), rtol=0, atol=tol)


def _chunk_loss(head: torch.nn.Module, transform: Transform, hidden: torch.Tensor,
                targets: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of (k, H) hidden states against (k,) targets, logits in float32."""
    logits = transform(head.forward(hidden)).float()  # (k, V)
    return torch.nn.functional.cross_entropy(logits, targets, reduction="sum")


def gathered_loss(model: torch.nn.Module, head: torch.nn.Module, inputs: dict[str, torch.Tensor],
                  labels: torch.Tensor, chunk: int = 0) -> torch.Tensor:
    """Mean token cross-entropy of `labels` (B, T; -100 = no loss, at least one target) under
    `model` run on `inputs`, with the head applied only to the K positions that predict a target.
    `head` is `output_head(model)`; `chunk` > 0 runs it on that many targets at a time."""
    predicts = labels[:, 1:] != -100  # (B, T-1): position t predicts token t + 1
    targets = labels[:, 1:][predicts]  # (K,)
    transform = logit_transform(model)
    parts: list[torch.Tensor] = []

    def on_head(_module: torch.nn.Module, args: tuple, kwargs: dict):
        hidden = _first_input(args, kwargs)  # (B, T, H), the final norm applied
        if hidden is None or hidden.shape[:2] != labels.shape:
            return None  # not the call the loss expects: parts stays empty and the caller says so
        picked = hidden[:, :-1][predicts]  # (K, H)
        if chunk <= 0 or len(targets) <= chunk:
            parts.append(_chunk_loss(head, transform, picked, targets))
        else:
            for start in range(0, len(targets), chunk):
                parts.append(checkpoint(_chunk_loss, head, transform, picked[start:start + chunk],
                                        targets[start:start + chunk], use_reentrant=False))
        empty = hidden[:, :0]  # (B, 0, H): the head's own call computes nothing
        return ((empty, *args[1:]), kwargs) if args else (args, {**kwargs, "input": empty})

    handle = head.register_forward_pre_hook(on_head, with_kwargs=True)
    try:
        out = model(**inputs, use_cache=False)
    finally:
        handle.remove()
    if not parts:
        raise RuntimeError("the LM head was not called on the full sequence; the gathered loss cannot apply")
    # The (B, 0, V) logits add nothing, but keep the loss connected to the forward's output: a
    # wrapper such as FSDP starts its backward bookkeeping from hooks on that output.
    return torch.stack(parts).sum() / len(targets) + out.logits.sum() * 0
