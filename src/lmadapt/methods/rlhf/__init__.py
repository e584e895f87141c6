"""RLHF as three registered methods, each through `run.tune` and the common run folder:

- `reward` (`reward.Reward`): scalar-head reward model, Bradley-Terry loss, preference pairs;
- `dpo` (`dpo.DPO`): DPO on the same preference pairs;
- `rlhf` (`method.Rlhf`): our own PPO (the math is in `ppo.py`) on a task of prompts.
`lmadapt rlhf reward | ppo | dpo` (`cli.py`) are aliases of `lmadapt tune`. See docs/rlhf.md.
"""

from lmadapt.methods.rlhf.config import DPOConfig, PPOConfig, RewardConfig
from lmadapt.methods.rlhf.data import (
           load_preferences,
           load_prompts,
           preference_pair,
           read_preferences,
)

__all__ = ["DPOConfig", "PPOConfig", "RewardConfig", "load_preferences", "load_prompts", "preference_pair",
           "read_preferences"]
