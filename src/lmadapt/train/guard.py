"""Stop a diverging run with one line instead of saving it as a result.

`DivergenceGuard` watches each optimizer step of a training loop (the shared loop in
`train/loop.py` and PPO's own update loop) and raises a `LmadaptError` naming the step, what went
wrong and the setting to change, when:

* the loss, the gradient norm or the trainable-weight norm is not finite (at once);
* the trainable weights exploded: their RMS grew past `weight_factor` x its starting value
  (starting values under 1 count as 1), at once;
* the loss stayed above `base + max((factor - 1) * |base|, margin)` for `patience` consecutive
  steps, where `base` is the lowest loss of the first `warmup` steps (the lowest, not the mean, so
  a run that blows up on its second step does not raise its own bar; the absolute margin keeps
  near-zero or negative starting losses, e.g. PPO's policy loss, from tripping it on noise);
* the gradient norm stayed above `grad_factor` x the smallest of the first `warmup` steps'
  (non-zero) norms for `patience` consecutive steps.

Runs shorter than `warmup + patience` steps get the immediate checks only, so a tiny run never
stops on a noisy loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from lmadapt.errors import LmadaptError


def weight_rms(params: Iterable[torch.Tensor]) -> float:
    """Root mean square of all entries of params (inf/nan when any entry is); one device sync."""
    tensors = [p.detach() for p in params]
    if not tensors:
        return 0.0
    count = sum(t.numel() for t in tensors)  # 0 where the weights live elsewhere (DeepSpeed ZeRO-3)
    if count == 0:
        return 0.0
    total = float(torch.nn.utils.get_total_norm(tensors, norm_type=2.0))
    return total / math.sqrt(count)


def fix_hint(lr: float, max_grad_norm: float, lr_key: str = "lr", clip_key: str = "max_grad_norm") -> str:
    """What to change: a lower learning rate, and gradient clipping when it is off."""
    hint = f"lower {lr_key} (now {lr:g})"
    if not max_grad_norm or max_grad_norm <= 0:
        hint += f" and turn gradient clipping on ({clip_key}=1.0)"
    return hint


class DivergenceGuard:
    """Call `watch(params)` once before training, `update(step, loss, grad_norm)` before each
    optimizer step and `check_weights(step, params)` after it; each raises LmadaptError on
    divergence."""

    def __init__(self, fix: str = "lower lr", what: str = "loss", warmup: int = 3, patience: int = 5,
                 factor: float = 3.0, margin: float = 1.0, grad_factor: float = 1e4,
                 weight_factor: float = 1e3, label: str = "training",
                 before_fail: Callable[[], object] | None = None) -> None:
        self.fix, self.what, self.label = fix, what, label
        self.before_fail = before_fail  # e.g. close the progress bar, so the error gets its own line
        self.warmup, self.patience = max(1, warmup), max(1, patience)
        self.factor, self.margin = factor, margin
        self.grad_factor, self.weight_factor = grad_factor, weight_factor
        self.first_losses: list[float] = []
        self.first_grads: list[float] = []
        self.weight_start: float | None = None
        self.high_loss = self.high_grad = 0  # current runs of consecutive bad steps

    def fail(self, step: int, what: str) -> None:
        """Raise the one-line divergence error: what happened at which step, and the fix."""
        if self.before_fail is not None:
            self.before_fail()
        raise LmadaptError(f"{self.label} diverged at step {step}: {what}; {self.fix}")

    def loss_limit(self) -> float | None:
        """The loss above which a step counts as diverged (None until `warmup` steps are seen)."""
        if len(self.first_losses) < self.warmup:
            return None
        base = min(self.first_losses)
        return base + max((self.factor - 1.0) * abs(base), self.margin)

    def grad_limit(self) -> float | None:
        positive = [g for g in self.first_grads if g > 0]
        if len(self.first_grads) < self.warmup or not positive:
            return None
        return self.grad_factor * min(positive)

    def update(self, step: int, loss: float, grad_norm: float | None = None) -> None:
        """Check one optimizer step's loss (and pre-clipping gradient norm); raise on divergence."""
        loss = float(loss)
        if not math.isfinite(loss):
            self.fail(step, f"the {self.what} became {loss}")
        if grad_norm is not None:
            grad_norm = float(grad_norm)
            if not math.isfinite(grad_norm):
                self.fail(step, f"the gradient norm became {grad_norm} ({self.what} {loss:.4g})")
        limit = self.loss_limit()
        if limit is None:
            self.first_losses.append(loss)
        else:
            self.high_loss = self.high_loss + 1 if loss > limit else 0
            if self.high_loss >= self.patience:
                self.fail(step, f"the {self.what} ({loss:.4g}) stayed above {limit:.4g} "
                                 f"(its start was {min(self.first_losses):.4g}) for {self.high_loss} steps")
        if grad_norm is None:
            return
        glimit = self.grad_limit()
        if glimit is None and len(self.first_grads) < self.warmup:
            self.first_grads.append(grad_norm)
        elif glimit is not None:
            self.high_grad = self.high_grad + 1 if grad_norm > glimit else 0
            if self.high_grad >= self.patience:
                self.fail(step, f"the gradient norm ({grad_norm:.4g}) stayed above {glimit:.4g} "
                                 f"({self.grad_factor:g}x its start) for {self.high_grad} steps")

    def watch(self, params: Iterable[torch.Tensor]) -> None:
        """Record the trainable weights' starting RMS (call once, before the first step)."""
        self.weight_start = weight_rms(params)

    def check_weights(self, step: int, params: Iterable[torch.Tensor] | float) -> None:
        """After the optimizer step: the trainable weights are finite and have not exploded."""
        rms = float(params) if isinstance(params, (int, float)) else weight_rms(params)
        if not math.isfinite(rms):
            self.fail(step, f"the trainable weights became non-finite (RMS {rms})")
        if self.weight_start is None:  # `watch` was not called: this step's weights are the start
            self.weight_start = rms
            return
        limit = self.weight_factor * max(self.weight_start, 1.0)
        if rms > limit:
            self.fail(step, f"the trainable weights exploded (RMS {rms:.4g}, started at {self.weight_start:.4g})")
