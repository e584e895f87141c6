"""PPO's driver: load the policy (+ LoRA) and the reward, run the PPO steps, score held-out prompts.

`method.Rlhf.fit` puts these together inside `run.tune`; the run folder gets `ppo_log.jsonl`
(one row per PPO step: reward, kl, entropy, clip_fraction, value_loss, ...) beside the common
files.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from peft import TaskType
from tqdm.auto import tqdm

from lmadapt.errors import LmadaptError
from lmadapt.methods.rlhf.common import add_lora
from lmadapt.methods.rlhf.config import PPOConfig
from lmadapt.methods.rlhf.ppo import (
    KLController,
    PolicyWithValue,
    decode_responses,
    kl_penalty,
    ppo_guard,
    ppo_step,
    sample_rollout,
    token_logps,
)
from lmadapt.models.load import ModelSpec, load_causal_lm
from lmadapt.train.loop import adamw
from lmadapt.utils import seed_everything

RewardFn = Callable[[list[str], list[str]], "torch.Tensor | list[float]"]


def load_reward_fn(ref: str | Callable, device: str = "auto", trust_remote_code: bool = False) -> RewardFn:
    """A reward: a callable as is, a reward-model run folder, or 'module:function' / 'file.py:function'
    (imported: only for a reference the user gave, never for one read from a run folder)."""
    if callable(ref):
        return ref
    path = Path(ref)
    if path.is_dir():
        from lmadapt.methods.rlhf.reward import load_reward_model

        return load_reward_model(path, device, trust_remote_code=trust_remote_code)
    target, sep, name = str(ref).rpartition(":")
    if not sep or not target or not name:
        raise LmadaptError(f"--reward {ref!r} is neither a reward-model folder nor 'module:function'")
    if target.endswith(".py"):
        if not Path(target).exists():
            raise LmadaptError(f"reward file {target} does not exist")
        spec = importlib.util.spec_from_file_location("lmadapt_user_reward", target)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as err:
            raise LmadaptError(f"cannot import reward module {target!r}: {err}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise LmadaptError(f"{target} has no callable {name!r}; it must take (prompts, responses)")
    return fn


def load_policy(spec: ModelSpec, cfg: PPOConfig) -> tuple[PolicyWithValue, object, str]:
    """(policy with value head, tokenizer, resolved reference) for a causal LM."""
    lm, tokenizer, ref = load_causal_lm(spec, "the PPO policy")
    seed_everything(cfg.seed)
    if cfg.adapter == "lora":
        lm = add_lora(lm, TaskType.CAUSAL_LM, cfg.lora_r, cfg.lora_targets)
    else:
        lm.requires_grad_(True)
    policy = PolicyWithValue(lm, len(tokenizer)).to(spec.torch_device())
    return policy, tokenizer, ref


@torch.no_grad()
def evaluate_policy(policy: PolicyWithValue, tokenizer, prompts: list[str], reward_fn: RewardFn,
                    cfg: PPOConfig, seed: int = 12345) -> dict:
    """Sampled continuations of held-out prompts: per-sample reward and KL(π‖π_ref) (summed over tokens)."""
    rewards, kls, samples = [], [], []
    repeated = [p for p in prompts for _ in range(cfg.eval_samples)]
    size = max(cfg.rollout_batch, 8)
    for start in range(0, len(repeated), size):
        chunk = repeated[start:start + size]
        roll = sample_rollout(policy, tokenizer, chunk, cfg, seed=seed + start)
        device = next(policy.parameters()).device
        ids, attn, n = roll.input_ids.to(device), roll.attention_mask.to(device), roll.response.shape[1]
        policy.eval()
        logits, _ = policy(ids, attn, n)
        response, mask = roll.response.to(device), roll.mask.to(device)
        logps = token_logps(logits / cfg.temperature, response)
        ref_logps = token_logps(policy.reference_logits(ids, attn, n) / cfg.temperature, response)
        kls += (kl_penalty(logps, ref_logps) * mask).sum(-1).cpu().tolist()
        texts = decode_responses(tokenizer, roll)
        scores = torch.as_tensor(reward_fn(chunk, texts), dtype=torch.float32).reshape(-1).tolist()
        rewards += scores
        samples += [{"prompt": p, "response": t, "reward": r} for p, t, r in zip(chunk, texts, scores, strict=True)]
    return {"rewards": np.array(rewards), "kl": np.array(kls), "samples": samples}


def _prompt_batches(prompts: list[str], cfg: PPOConfig) -> list[list[str]]:
    """cfg.steps batches of cfg.rollout_batch prompts, cycling through seeded shuffles."""
    gen = torch.Generator().manual_seed(cfg.seed)
    order: list[int] = []
    while len(order) < cfg.steps * cfg.rollout_batch:
        order += torch.randperm(len(prompts), generator=gen).tolist()
    return [[prompts[i] for i in order[s * cfg.rollout_batch:(s + 1) * cfg.rollout_batch]] for s in range(cfg.steps)]


def run_ppo_loop(policy: PolicyWithValue, tokenizer, prompts: list[str], reward_fn: RewardFn, cfg: PPOConfig,
                 log_path: Path | None = None, show_progress: bool = True, lr_key: str = "lr",
                 clip_key: str = "max_grad_norm") -> list[dict]:
    """cfg.steps PPO steps; each step's stats go to the progress bar and (as JSONL) to log_path.

    A diverging run (non-finite or exploding loss, gradient or weights) stops with one line that
    names the PPO step and the settings `lr_key` (and `clip_key`) to change. The bar also honours
    tqdm's TQDM_DISABLE environment variable when show_progress is true."""
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = adamw([{"params": params}], cfg.lr, weight_decay=0.01)  # torch AdamW's default
    guard = ppo_guard(cfg, params, lr_key, clip_key)
    kl = KLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon)
    generator = torch.Generator().manual_seed(cfg.seed)
    log: list[dict] = []
    bar = tqdm(_prompt_batches(prompts, cfg), desc="ppo", unit="step", dynamic_ncols=True,
               **({} if show_progress else {"disable": True}))
    guard.before_fail = bar.close
    for step, batch in enumerate(bar):
        began = time.perf_counter()
        row = ppo_step(policy, optimizer, tokenizer, batch, reward_fn, kl, cfg, step, generator, guard)
        row["seconds"] = time.perf_counter() - began
        log.append(row)
        bar.set_postfix(reward=f"{row['reward']:.3f}", kl=f"{row['kl']:.3f}", ent=f"{row['entropy']:.2f}",
                        clip=f"{row['clip_fraction']:.2f}", vloss=f"{row['value_loss']:.3f}")
        if log_path is not None:
            with log_path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")
    bar.close()
    return log
