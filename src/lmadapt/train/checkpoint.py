"""Resumable checkpoints: trainable weights, optimizer, scheduler, RNG and the loss curve.

Layout: `checkpoints/step-N/{trainable.safetensors, optimizer.pt, state.json, rng.safetensors}`.
optimizer.pt holds tensors and plain containers only and is read with `weights_only=True`.
Each checkpoint is written into a temporary folder and renamed, so a crash leaves none half-done.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from lmadapt.errors import LmadaptError

KEEP = 2  # newest checkpoints kept


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Trainable parameters by name (contiguous CPU copies, safe for safetensors)."""
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def latest_checkpoint(root: Path) -> Path | None:
    if not root.is_dir():
        return None
    steps = sorted((int(p.name.split("-")[1]), p) for p in root.glob("step-*") if p.name.split("-")[1].isdigit())
    return steps[-1][1] if steps else None


def save_checkpoint(root: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, losses: list[float],
                    epoch_evals: list[dict] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step}"
    tmp = root / f".tmp-step-{step}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(trainable_state(model), tmp / "trainable.safetensors")
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    save_file(rng, tmp / "rng.safetensors")
    sched = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    state = {"step": step, "losses": losses, "epoch_evals": epoch_evals or [], "scheduler": sched,
             "python_random": repr(random.getstate()), "numpy_seed_state": None}
    (tmp / "state.json").write_text(json.dumps(state))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in sorted(root.glob("step-*"), key=lambda p: int(p.name.split("-")[1]))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler) -> tuple[int, list[float], list[dict]]:
    """Restore everything saved by save_checkpoint; returns (step, losses, per-epoch evals so far)."""
    try:
        weights = load_file(path / "trainable.safetensors")
    except Exception as err:  # a truncated or foreign file: safetensors raises its own error types
        raise LmadaptError(f"checkpoint {path} is unreadable ({err}); remove it to resume from the "
                           "one before, or start over with resume=false") from None
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing = [n for n in trainable if n not in weights]
    if missing:
        raise LmadaptError(f"checkpoint {path} does not match this model/method (no {missing[0]}); "
                           "resume with the same method and model, or start in a new folder")
    for name, param in trainable.items():
        if tuple(weights[name].shape) != tuple(param.shape):
            raise LmadaptError(f"checkpoint {path} does not match this model/method: {name} has shape "
                               f"{tuple(weights[name].shape)} there, {tuple(param.shape)} here; resume with "
                               "the same settings, or start over with resume=false")
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in weights:
                param.copy_(weights[name].to(param.device, param.dtype))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    state = json.loads((path / "state.json").read_text())
    sched_state = scheduler.state_dict()
    sched_state.update(state["scheduler"])
    scheduler.load_state_dict(sched_state)
    rng = load_file(path / "rng.safetensors")
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    np.random.seed(state["step"])
    return int(state["step"]), list(state["losses"]), list(state.get("epoch_evals", []))
