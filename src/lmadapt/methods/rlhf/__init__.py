"""RLHF: a reward model (Bradley-Terry), PPO with a KL penalty to a reference, and DPO.

- `reward.train_reward_model` / `lmadapt rlhf reward`: scalar-head reward model on any backbone;
- `ppo_run.train_ppo` / `lmadapt rlhf ppo`: our own PPO (the math is in `ppo.py`);
- `dpo.train_dpo` / `lmadapt rlhf dpo`: DPO on the same preference pairs.
See docs/rlhf.md.
"""

from lmadapt.methods.rlhf.config import DPOConfig, PPOConfig, RewardConfig
from lmadapt.methods.rlhf.data import PreferencePair, load_preferences, load_prompts

__all__ = ["DPOConfig", "PPOConfig", "PreferencePair", "RewardConfig", "load_preferences", "load_prompts"]
