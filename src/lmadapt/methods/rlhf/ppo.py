"""PPO for language models with a per-token KL penalty to a frozen reference.

One PPO step (Ziegler et al., 2019, arXiv 1909.08593; Ouyang et al., 2022, InstructGPT §3.5):
  1. rollout: sample a continuation y of each prompt x from π_θ (lmadapt.decoding, KV-cached);
  2. score: R(x, y) from a reward model or a Python callable;
  3. per-token rewards (InstructGPT Eq. 2, as a per-token KL penalty):
        r_t = −β · (log π_θ(y_t | x, y_<t) − log π_ref(y_t | x, y_<t)),  plus R(x, y) on the last token;
  4. advantages by GAE(γ, λ) from a value head on the policy's last hidden state;
  5. several epochs of minibatch updates of the clipped surrogate (Schulman et al., 2017, Eq. 7)
     + clipped value loss, with gradient clipping.
The reference of a LoRA policy is the same model with its adapter disabled (no second copy); a
full-weight policy keeps a frozen copy. The math lives in the small functions at the top.

Shapes: B rollouts, T prompt tokens (left-padded), N response tokens (right-padded), V vocab.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from peft import PeftModel

from lmadapt.decoding import GenerationConfig, ModelSource, decode_batch
from lmadapt.decoding.engine import left_pad, pad_id_of, position_ids_for
from lmadapt.decoding.scoring import token_logprobs
from lmadapt.methods.rlhf.config import PPOConfig
from lmadapt.train.guard import DivergenceGuard, fix_hint

# ---- the math ------------------------------------------------------------------------------------


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of values where mask is 1: (B, N), (B, N) → scalar."""
    return (values * mask).sum() / mask.sum().clamp_min(1)


def whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(x − μ) / σ over the masked entries (μ kept when shift_mean is false): (B, N) → (B, N).

    Advantage normalisation is standard PPO practice; scale-only whitening of the per-token
    rewards keeps their sign (Ziegler et al., 2019 normalise the reward model's output).
    """
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    out = (values - mean) * torch.rsqrt(var + eps)
    return out if shift_mean else out + mean


def kl_penalty(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Per-token KL estimate log π_θ(y_t) − log π_ref(y_t) of the sampled tokens: (B, N) → (B, N).

    Its expectation under y ~ π_θ is KL(π_θ ‖ π_ref) (InstructGPT Eq. 2's penalty term);
    it is exactly zero wherever the policy equals the reference.
    """
    return logps - ref_logps


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
        lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized Advantage Estimation (Schulman et al., 2016, arXiv 1506.02438, Eq. 11-16).

        δ_t = r_t + γ V(s_{t+1}) − V(s_t),      A_t = δ_t + γλ A_{t+1},      R_t = A_t + V(s_t)

    rewards, values, mask: (B, N); the value after the last real token is 0 (episode ends).
    Returns (advantages, returns), each (B, N), zero where mask is 0.
    """
    rewards, values = rewards * mask, values * mask
    steps = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])  # (B,) A_{t+1}
    for t in reversed(range(steps)):
        next_value = values[:, t + 1] if t + 1 < steps else torch.zeros_like(running)  # (B,)
        delta = rewards[:, t] + gamma * next_value - values[:, t]  # (B,)
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * mask


def ppo_policy_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor,
                    mask: torch.Tensor, clip_range: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped surrogate (Schulman et al., 2017, arXiv 1707.06347, Eq. 7), as a loss to minimise:

        ρ_t = exp(log π_θ − log π_old),   L = −E_t[ min(ρ_t A_t, clip(ρ_t, 1−ε, 1+ε) A_t) ]

    All inputs (B, N). Returns (loss, fraction of tokens where the clip was active).
    """
    ratio = torch.exp(logps - old_logps)  # (B, N)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clip_fraction = masked_mean((clipped > unclipped).float(), mask)
    return loss, clip_fraction


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
               mask: torch.Tensor, clip_range_value: float) -> torch.Tensor:
    """Clipped value loss (as in OpenAI baselines' PPO2 / Ziegler et al., 2019):

        V_clip = V_old + clip(V − V_old, −ε_v, ε_v),   L_V = ½ E_t[ max((V − R)², (V_clip − R)²) ]

    All inputs (B, N) → scalar.
    """
    clipped = old_values + (values - old_values).clamp(-clip_range_value, clip_range_value)
    return 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (clipped - returns) ** 2), mask)


def entropy_of(logits: torch.Tensor) -> torch.Tensor:
    """Entropy −Σ_v p_v log p_v of each position's distribution: (B, N, V) → (B, N)."""
    logps = torch.log_softmax(logits, dim=-1)
    return -(logps.exp() * logps).sum(-1)


class KLController:
    """β of the KL penalty: fixed, or adaptive (Ziegler et al., 2019, §2.2):

        e_t = clip(KL_t / KL_target − 1, −0.2, 0.2),   β_{t+1} = β_t (1 + e_t · n / horizon)
    with n the rollouts of step t."""

    def __init__(self, beta: float, target: float = 0.0, horizon: int = 10000) -> None:
        self.beta, self.target, self.horizon = beta, target, horizon

    def update(self, kl: float, n_rollouts: int) -> None:
        if self.target > 0:
            error = max(-0.2, min(0.2, kl / self.target - 1.0))
            self.beta *= 1.0 + error * n_rollouts / self.horizon


# ---- policy with a value head ----------------------------------------------------------------


class PolicyWithValue(torch.nn.Module):
    """A causal LM (optionally a peft LoRA model) plus a scalar value head on its last hidden state."""

    def __init__(self, lm: torch.nn.Module, vocab_size: int) -> None:
        super().__init__()
        self.lm, self.vocab_size = lm, vocab_size
        hidden = lm.config.hidden_size if not isinstance(lm, PeftModel) else lm.get_base_model().config.hidden_size
        self.value_head = torch.nn.Linear(hidden, 1)
        torch.nn.init.zeros_(self.value_head.weight)
        torch.nn.init.zeros_(self.value_head.bias)
        # kept out of the module tree: not trained, not saved, not counted
        frozen = None if isinstance(lm, PeftModel) else copy.deepcopy(lm).requires_grad_(False).eval()
        self.__dict__["reference"] = frozen

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                n_response: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, N, V) predicting the N response tokens, and values (B, N) of the states before them."""
        out = self.lm(input_ids=input_ids, attention_mask=attention_mask,
                      position_ids=position_ids_for(attention_mask), output_hidden_states=True)
        span = slice(input_ids.shape[1] - n_response - 1, input_ids.shape[1] - 1)
        logits = out.logits[:, span, : self.vocab_size].float()  # (B, N, V)
        values = self.value_head(out.hidden_states[-1][:, span].float()).squeeze(-1)  # (B, N)
        return logits, values

    @torch.no_grad()
    def reference_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, n_response: int) -> torch.Tensor:
        """The frozen reference's logits (B, N, V): the adapter switched off, or the frozen copy."""
        model = self.reference if self.reference is not None else self.lm
        switch = self.lm.disable_adapter() if self.reference is None else contextlib.nullcontext()
        with switch:
            out = model(input_ids=input_ids, attention_mask=attention_mask,
                        position_ids=position_ids_for(attention_mask))
        return out.logits[:, input_ids.shape[1] - n_response - 1: -1, : self.vocab_size].float()


def token_logps(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(token) under each position's logits: (B, N, V), (B, N) → (B, N)."""
    return token_logprobs(logits, tokens[..., None]).squeeze(-1)


# ---- rollouts ---------------------------------------------------------------------------------


@dataclass
class Rollout:
    """A batch of sampled continuations and everything PPO computes from it (CPU or device tensors)."""

    input_ids: torch.Tensor  # (B, T + N) prompt (left-padded) + response (right-padded)
    attention_mask: torch.Tensor  # (B, T + N)
    response: torch.Tensor  # (B, N)
    mask: torch.Tensor  # (B, N) 1 for response tokens up to and including EOS
    old_logps: torch.Tensor | None = None  # (B, N) log π_old(y_t)
    ref_logps: torch.Tensor | None = None  # (B, N) log π_ref(y_t)
    old_values: torch.Tensor | None = None  # (B, N)
    advantages: torch.Tensor | None = None  # (B, N)
    returns: torch.Tensor | None = None  # (B, N)

    def rows(self, index: torch.Tensor) -> Rollout:
        """The sub-batch of the given rows."""
        return Rollout(**{k: None if v is None else v[index] for k, v in self.__dict__.items()})


def response_mask(response: torch.Tensor, eos_ids: list[int]) -> torch.Tensor:
    """1 for tokens up to and including each row's first EOS, 0 after: (B, N) → (B, N) float."""
    is_eos = torch.isin(response, torch.tensor(eos_ids, dtype=response.dtype)).long()  # (B, N)
    ended_before = is_eos.cumsum(-1) - is_eos  # EOS tokens strictly before t
    return (ended_before == 0).float()


def eos_ids_of(source: ModelSource, tokenizer) -> list[int]:
    """EOS ids of the model's generation config and of the tokenizer."""
    ids = set(source.eos_token_ids)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return sorted(ids)


@torch.no_grad()
def sample_rollout(policy: PolicyWithValue, tokenizer, prompts: list[str], cfg: PPOConfig,
                   seed: int) -> Rollout:
    """Sample one continuation per prompt with the KV-cached decoding engine."""
    pad = pad_id_of(tokenizer)
    rows = [tokenizer(p)["input_ids"][-cfg.max_prompt_length:] for p in prompts]
    query, query_mask = left_pad(rows, pad)  # (B, T)
    gen = GenerationConfig(max_new_tokens=cfg.max_new_tokens, do_sample=True, temperature=cfg.temperature,
                           seed=seed)
    source = ModelSource(policy.lm, vocab_size=policy.vocab_size)
    eos = eos_ids_of(source, tokenizer)
    response = decode_batch(source, query, query_mask, gen, eos, pad)  # (B, N)
    source.reset()
    mask = response_mask(response, eos)
    return Rollout(torch.cat([query, response], 1), torch.cat([query_mask, mask.long()], 1), response, mask)


def decode_responses(tokenizer, rollout: Rollout) -> list[str]:
    """Text of each response (EOS and padding dropped)."""
    return [tokenizer.decode(row[m.bool()].tolist(), skip_special_tokens=True)
            for row, m in zip(rollout.response, rollout.mask, strict=True)]


@torch.no_grad()
def score_rollout(policy: PolicyWithValue, roll: Rollout, scores: torch.Tensor, kl: KLController,
                  cfg: PPOConfig) -> dict[str, float]:
    """Fill old log-probs, reference log-probs, values, advantages and returns; return stats.

    scores: (B,) R(x, y) of each rollout.
    """
    device = next(policy.parameters()).device
    ids, attn, n = roll.input_ids.to(device), roll.attention_mask.to(device), roll.response.shape[1]
    policy.eval()
    logits, values = policy(ids, attn, n)  # (B, N, V), (B, N)
    logits = logits / cfg.temperature
    response, mask = roll.response.to(device), roll.mask.to(device)
    roll.old_logps = token_logps(logits, response)  # (B, N)
    roll.ref_logps = token_logps(policy.reference_logits(ids, attn, n) / cfg.temperature, response)
    roll.old_values = values * mask
    token_kl = kl_penalty(roll.old_logps, roll.ref_logps) * mask  # (B, N)
    rewards = -kl.beta * token_kl  # InstructGPT Eq. 2, per token
    last = (mask.sum(-1).long() - 1).clamp_min(0)  # (B,) index of the last real token
    rewards[torch.arange(len(last)), last] += scores.to(device).float()
    if cfg.whiten_rewards:
        rewards = whiten(rewards, mask, shift_mean=False) * mask
    advantages, roll.returns = gae(rewards, roll.old_values, mask, cfg.gamma, cfg.lam)
    roll.advantages = whiten(advantages, mask) * mask
    roll.input_ids, roll.attention_mask, roll.response, roll.mask = ids, attn, response, mask
    return {"reward": float(scores.float().mean()), "kl": float(token_kl.sum(-1).mean()),
            "response_tokens": float(mask.sum(-1).mean()), "beta": kl.beta}


def minibatches(n: int, size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Shuffled row indices in chunks of `size` (the last may be smaller)."""
    order = torch.randperm(n, generator=generator)
    yield from (order[i:i + size] for i in range(0, n, size))


def ppo_guard(cfg: PPOConfig, params: list[torch.nn.Parameter] | None = None,
              lr_key: str = "lr", clip_key: str = "max_grad_norm") -> DivergenceGuard:
    """Divergence checks of PPO's updates (train/guard.py) on the policy loss, whose start is
    about 0 (whitened advantages): the value loss is left out of the bar because it legitimately
    grows with the rewards; it must stay finite, like the gradient and weight norms."""
    guard = DivergenceGuard(fix_hint(cfg.lr, cfg.max_grad_norm, lr_key, clip_key), what="policy loss", label="PPO")
    if params is not None:
        guard.watch(params)
    return guard


def ppo_update(policy: PolicyWithValue, optimizer: torch.optim.Optimizer, roll: Rollout, cfg: PPOConfig,
               generator: torch.Generator, guard: DivergenceGuard | None = None,
               step: int = 1) -> dict[str, float]:
    """cfg.ppo_epochs passes of minibatch gradient steps on one scored rollout batch; mean stats.

    `guard` (kept across PPO steps by the caller) stops a diverging run with one line naming the
    PPO step; without one, each call checks its own updates."""
    policy.train()
    params = [p for p in policy.parameters() if p.requires_grad]
    guard = guard if guard is not None else ppo_guard(cfg, params)
    totals: dict[str, float] = {"policy_loss": 0.0, "value_loss": 0.0, "entropy": 0.0, "clip_fraction": 0.0}
    count = 0
    for _ in range(cfg.ppo_epochs):
        for index in minibatches(roll.response.shape[0], cfg.minibatch, generator):
            mb = roll.rows(index.to(roll.response.device))
            logits, values = policy(mb.input_ids, mb.attention_mask, mb.response.shape[1])
            logits = logits / cfg.temperature  # (b, N, V)
            logps = token_logps(logits, mb.response)  # (b, N)
            pg_loss, clip_fraction = ppo_policy_loss(logps, mb.old_logps, mb.advantages, mb.mask, cfg.clip_range)
            v_loss = value_loss(values, mb.old_values, mb.returns, mb.mask, cfg.clip_range_value)
            entropy = masked_mean(entropy_of(logits), mb.mask)
            loss = pg_loss + cfg.value_coef * v_loss - cfg.entropy_coef * entropy
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            # the pre-clipping norm; an infinite limit measures it without clipping when clipping is off
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm if cfg.max_grad_norm > 0 else math.inf)
            total = float(loss.detach())
            if not math.isfinite(total):
                guard.fail(step, f"the loss became {total}")
            guard.update(step, float(pg_loss.detach()), float(grad_norm))
            optimizer.step()
            guard.check_weights(step, params)
            for key, value in (("policy_loss", pg_loss), ("value_loss", v_loss), ("entropy", entropy),
                               ("clip_fraction", clip_fraction)):
                totals[key] += float(value.detach())
            count += 1
    return {k: v / max(1, count) for k, v in totals.items()}


def ppo_step(policy: PolicyWithValue, optimizer: torch.optim.Optimizer, tokenizer, prompts: list[str],
             reward_fn, kl: KLController, cfg: PPOConfig, step: int,
             generator: torch.Generator, guard: DivergenceGuard | None = None) -> dict[str, float]:
    """One PPO step: rollout → reward → advantages → updates → β update. Returns the step's log row."""
    roll = sample_rollout(policy, tokenizer, prompts, cfg, seed=cfg.seed * 1_000_003 + step)
    responses = decode_responses(tokenizer, roll)
    scores = torch.as_tensor(reward_fn(prompts, responses), dtype=torch.float32).reshape(-1)  # (B,)
    stats = score_rollout(policy, roll, scores, kl, cfg)
    stats.update(ppo_update(policy, optimizer, roll, cfg, generator, guard, step + 1))
    kl.update(stats["kl"], len(prompts))
    return {"step": step + 1, **stats}
