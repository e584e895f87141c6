"""Settings of the three RLHF methods (flat dataclasses with help text): `reward`
(RewardConfig), `dpo` (DPOConfig) and `rlhf` (RlhfMethodConfig: PPOConfig's settings named
`rlhf_<setting>` for tune/compare, plus the reward).

The CLI (`lmadapt tune ... key=value`, `lmadapt rlhf reward|ppo|dpo ... key=value`), YAML files
and the Python API all build these same classes; `__post_init__` rejects bad values with
one-line errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from lmadapt.errors import LmadaptError


def _check(checks: list[tuple[bool, str]]) -> None:
    for ok, message in checks:
        if not ok:
            raise LmadaptError(message)


@dataclass
class RewardConfig:
    """A scalar-head reward model trained with the Bradley-Terry loss (Ouyang et al., 2022, Eq. 1)."""

    reward_adapter: str = field(default="full", metadata={"help": "full | lora: train every weight or a LoRA + the head"})
    reward_lora_r: int = field(default=8, metadata={"help": "LoRA rank when reward_adapter=lora"})
    reward_default_lr: float = field(default=3e-5, metadata={"help": "learning rate used when lr=0 (full; LoRA uses 10x)"})

    def __post_init__(self) -> None:
        _check([(self.reward_adapter in ("full", "lora"), f"reward_adapter must be full or lora, got {self.reward_adapter!r}"),
                (self.reward_lora_r >= 1, f"reward_lora_r must be >= 1, got {self.reward_lora_r}")])


@dataclass
class PPOConfig:
    """PPO with a per-token KL penalty to a frozen reference (Ziegler et al., 2019; Ouyang et al., 2022)."""

    steps: int = field(default=20, metadata={"help": "PPO steps (one rollout batch + its updates each)"})
    rollout_batch: int = field(default=8, metadata={"help": "prompts sampled per PPO step"})
    minibatch: int = field(default=4, metadata={"help": "rollouts per gradient step inside a PPO epoch"})
    ppo_epochs: int = field(default=2, metadata={"help": "passes over each rollout batch"})
    lr: float = field(default=1e-4, metadata={"help": "AdamW learning rate (policy adapter + value head)"})
    max_new_tokens: int = field(default=24, metadata={"help": "tokens generated per rollout"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature of rollouts (1 = the policy itself)"})
    gamma: float = field(default=1.0, metadata={"help": "GAE discount γ"})
    lam: float = field(default=0.95, metadata={"help": "GAE λ"})
    clip_range: float = field(default=0.2, metadata={"help": "policy ratio clip ε"})
    clip_range_value: float = field(default=0.2, metadata={"help": "value clip ε_v around the rollout values"})
    value_coef: float = field(default=0.5, metadata={"help": "weight of the value loss"})
    entropy_coef: float = field(default=0.0, metadata={"help": "entropy bonus weight (0 = log only)"})
    kl_coef: float = field(default=0.1, metadata={"help": "initial KL penalty β"})
    kl_target: float = field(default=0.0, metadata={"help": "target KL per sequence for the adaptive β (0 = fixed β)"})
    kl_horizon: int = field(default=10000, metadata={"help": "adaptive-β horizon in rollouts (Ziegler et al., 2019, §2.2)"})
    whiten_rewards: bool = field(default=True, metadata={"help": "scale per-token rewards to unit variance per batch"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm (0 = off)"})
    adapter: str = field(default="lora", metadata={"help": "lora | full: LoRA policy (reference = adapter off) or all weights (frozen copy)"})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank of the policy"})
    lora_targets: str = field(default="qv", metadata={"help": "qv | all-linear: LoRA on query/value projections or every linear layer"})
    max_prompt_length: int = field(default=64, metadata={"help": "longest prompt in tokens (left-truncated)"})
    eval_samples: int = field(default=1, metadata={"help": "sampled continuations per held-out prompt"})
    seed: int = field(default=0, metadata={"help": "seed for prompt order, sampling and initialisation"})

    def __post_init__(self) -> None:
        _check([
            (self.steps >= 1, f"steps must be >= 1, got {self.steps}"),
            (self.rollout_batch >= 1, f"rollout_batch must be >= 1, got {self.rollout_batch}"),
            (1 <= self.minibatch <= self.rollout_batch,
             f"minibatch must be in [1, rollout_batch={self.rollout_batch}], got {self.minibatch}"),
            (self.ppo_epochs >= 1, f"ppo_epochs must be >= 1, got {self.ppo_epochs}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.max_new_tokens >= 1, f"max_new_tokens must be >= 1, got {self.max_new_tokens}"),
            (self.temperature > 0, f"temperature must be > 0, got {self.temperature}"),
            (0 <= self.gamma <= 1 and 0 <= self.lam <= 1, "gamma and lam must be in [0, 1]"),
            (self.clip_range > 0 and self.clip_range_value > 0, "clip_range and clip_range_value must be > 0"),
            (self.kl_coef >= 0 and self.kl_target >= 0, "kl_coef and kl_target must be >= 0"),
            (self.adapter in ("lora", "full"), f"adapter must be lora or full, got {self.adapter!r}"),
            (self.lora_targets in ("qv", "all-linear"), f"lora_targets must be qv or all-linear, got {self.lora_targets!r}"),
            (self.eval_samples >= 1, f"eval_samples must be >= 1, got {self.eval_samples}"),
        ])


@dataclass
class DPOConfig:
    """Direct Preference Optimization (Rafailov et al., 2023, Eq. 7) on prompt/chosen/rejected pairs."""

    beta: float = field(default=0.1, metadata={"help": "DPO β: strength of the implicit KL constraint"})
    dpo_adapter: str = field(default="lora", metadata={"help": "lora | full (reference = adapter off, or a frozen copy)"})
    dpo_lora_r: int = field(default=8, metadata={"help": "LoRA rank when dpo_adapter=lora"})
    dpo_default_lr: float = field(default=5e-4, metadata={"help": "learning rate used when lr=0 (LoRA; full uses /50)"})

    def __post_init__(self) -> None:
        _check([(self.beta > 0, f"beta must be > 0, got {self.beta}"),
                (self.dpo_adapter in ("full", "lora"), f"dpo_adapter must be full or lora, got {self.dpo_adapter!r}"),
                (self.dpo_lora_r >= 1, f"dpo_lora_r must be >= 1, got {self.dpo_lora_r}")])


PREFIX = "rlhf_"  # tune's names for PPOConfig's settings (seed comes from the train settings)


@dataclass
class RlhfMethodConfig:
    """PPO settings for `rlhf` in tune/compare: PPOConfig's, each named `rlhf_<setting>`."""

    rlhf_reward: str = field(default="", metadata={"path": True, "help": "reward: a `reward` run folder (`lmadapt rlhf reward` / `tune --method reward`), module:function or file.py:function"})
    rlhf_steps: int = field(default=20, metadata={"help": "PPO steps (one rollout batch + its updates each)"})
    rlhf_rollout_batch: int = field(default=8, metadata={"help": "prompts sampled per PPO step"})
    rlhf_minibatch: int = field(default=0, metadata={"help": "rollouts per gradient step (0 = min(4, rlhf_rollout_batch))"})
    rlhf_ppo_epochs: int = field(default=2, metadata={"help": "passes over each rollout batch"})
    rlhf_kl_coef: float = field(default=0.1, metadata={"help": "KL penalty β"})
    rlhf_kl_target: float = field(default=0.0, metadata={"help": "target KL per sequence for the adaptive β (0 = fixed β)"})
    rlhf_kl_horizon: int = field(default=10000, metadata={"help": "adaptive-β horizon in rollouts"})
    rlhf_lr: float = field(default=1e-4, metadata={"help": "policy learning rate"})
    rlhf_max_grad_norm: float = field(default=1.0, metadata={"help": "PPO gradient clipping norm (0 = off)"})
    rlhf_max_new_tokens: int = field(default=24, metadata={"help": "tokens generated per rollout (and by predict)"})
    rlhf_temperature: float = field(default=1.0, metadata={"help": "sampling temperature of rollouts"})
    rlhf_gamma: float = field(default=1.0, metadata={"help": "GAE discount γ"})
    rlhf_lam: float = field(default=0.95, metadata={"help": "GAE λ"})
    rlhf_clip_range: float = field(default=0.2, metadata={"help": "policy ratio clip ε"})
    rlhf_clip_range_value: float = field(default=0.2, metadata={"help": "value clip ε_v around the rollout values"})
    rlhf_value_coef: float = field(default=0.5, metadata={"help": "weight of the value loss"})
    rlhf_entropy_coef: float = field(default=0.0, metadata={"help": "entropy bonus weight"})
    rlhf_whiten_rewards: bool = field(default=True, metadata={"help": "scale per-token rewards to unit variance per batch"})
    rlhf_adapter: str = field(default="lora", metadata={"help": "lora | full policy"})
    rlhf_lora_r: int = field(default=8, metadata={"help": "LoRA rank of the policy"})
    rlhf_lora_targets: str = field(default="qv", metadata={"help": "qv | all-linear"})
    rlhf_max_prompt_length: int = field(default=64, metadata={"help": "longest prompt in tokens (left-truncated)"})
    rlhf_eval_samples: int = field(default=1, metadata={"help": "sampled continuations per held-out prompt"})

    def __post_init__(self) -> None:
        self.ppo(0)  # PPOConfig's checks, before any work

    def ppo(self, seed: int) -> PPOConfig:
        values = {f.name: getattr(self, PREFIX + f.name) for f in fields(PPOConfig) if f.name != "seed"}
        values["minibatch"] = values["minibatch"] or min(4, self.rlhf_rollout_batch)
        return PPOConfig(**values, seed=seed)

    @classmethod
    def from_ppo(cls, ppo: PPOConfig, reward: str) -> RlhfMethodConfig:
        """The method config of `lmadapt rlhf ppo`'s settings."""
        return cls(rlhf_reward=reward, **{PREFIX + f.name: getattr(ppo, f.name) for f in fields(PPOConfig)
                                          if f.name != "seed"})
