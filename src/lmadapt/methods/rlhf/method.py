"""Method `rlhf` for tune/compare: PPO against a reward on a task of prompts.

The task is a prompts file (`--kind prompts`, one `text` per row); the training prompts drive the
PPO rollouts and the eval prompts are scored after training. The run's score is the mean
held-out reward (with a bootstrap CI) of sampled continuations, and `record.extra` carries the
mean KL(π‖π_ref) and the held-out reward before training. With a LoRA policy the reference is the
same model with the adapter off, so no second copy is held.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file

from lmadapt.data.task import Task
from lmadapt.errors import LmadaptError
from lmadapt.eval.metrics import bootstrap_mean_ci
from lmadapt.methods.base import Adapted, RunContext
from lmadapt.methods.rlhf.common import save_backbone
from lmadapt.methods.rlhf.config import PPOConfig
from lmadapt.methods.rlhf.ppo import PolicyWithValue
from lmadapt.methods.rlhf.ppo_run import evaluate_policy, load_policy, load_reward_fn, run_ppo_loop
from lmadapt.models.load import count_params
from lmadapt.train.loop import TrainResult


@dataclass
class RlhfMethodConfig:
    """PPO settings for `rlhf` in tune/compare (the full set is on `lmadapt rlhf ppo`)."""

    rlhf_reward: str = field(default="", metadata={"path": True, "help": "reward: a `lmadapt rlhf reward` run folder, module:function or file.py:function"})
    rlhf_steps: int = field(default=20, metadata={"help": "PPO steps (one rollout batch + its updates each)"})
    rlhf_rollout_batch: int = field(default=8, metadata={"help": "prompts sampled per PPO step"})
    rlhf_kl_coef: float = field(default=0.1, metadata={"help": "KL penalty β"})
    rlhf_lr: float = field(default=1e-4, metadata={"help": "policy learning rate"})
    rlhf_max_new_tokens: int = field(default=24, metadata={"help": "tokens generated per rollout"})
    rlhf_lora_r: int = field(default=8, metadata={"help": "LoRA rank of the policy"})

    def ppo(self, seed: int) -> PPOConfig:
        return PPOConfig(steps=self.rlhf_steps, rollout_batch=self.rlhf_rollout_batch, kl_coef=self.rlhf_kl_coef,
                         lr=self.rlhf_lr, max_new_tokens=self.rlhf_max_new_tokens, lora_r=self.rlhf_lora_r,
                         minibatch=min(4, self.rlhf_rollout_batch), seed=seed)


@dataclass
class RlhfAdapted(Adapted):
    """A PPO-tuned policy; quality is the reward of its sampled continuations.

    A policy loaded from a run folder holds only the reward's reference (`reward_ref`); the reward
    is loaded when a score is asked for, and a Python reward (`file.py:function`,
    `module:function`) named by a run folder is never imported: `use_reward` (`lmadapt eval
    --reward`) supplies it explicitly."""

    policy: PolicyWithValue
    tokenizer: object
    reward_fn: object | None
    cfg: PPOConfig
    before: dict | None = None
    last_kl: float = 0.0
    reward_ref: str = ""
    device: str = "auto"
    trust_remote_code: bool = False

    def use_reward(self, ref: str) -> None:
        """Score with `ref` (a reward-model run folder or module:function / file.py:function)."""
        self.reward_fn = load_reward_fn(ref, self.device, self.trust_remote_code)

    def reward(self):
        """The reward function; a run folder's reward model is loaded on first use."""
        if self.reward_fn is None:
            if not self.reward_ref:
                raise LmadaptError("this rlhf run names no reward; pass --reward RUN_DIR or module:function")
            if not Path(self.reward_ref).is_dir():
                raise LmadaptError(f"this run's reward {self.reward_ref!r} is Python code, which is never imported "
                                   f"from a run folder; pass --reward {self.reward_ref} to run it")
            self.use_reward(self.reward_ref)
        return self.reward_fn

    @property
    def trainable_params(self) -> int:
        return count_params(self.policy)[0]

    @property
    def total_params(self) -> int:
        return count_params(self.policy)[1]

    def evaluate(self, task: Task, seed: int = 0, batch_size: int = 32) -> tuple[list[str], dict]:
        prompts = [task.prompt(t) for t in task.texts()]
        result = evaluate_policy(self.policy, self.tokenizer, prompts, self.reward(), replace(self.cfg, eval_samples=1))
        rewards = result["rewards"]
        self.last_kl = float(np.mean(result["kl"])) if len(result["kl"]) else 0.0
        low, high = bootstrap_mean_ci(rewards, seed=seed)
        scores = {"metric": "heldout_reward", "score": float(rewards.mean()), "ci_low": low, "ci_high": high}
        return [s["response"] for s in result["samples"]], scores

    def predict(self, texts: list[str], batch_size: int = 16) -> list[str]:
        raise LmadaptError("an rlhf policy generates text; use `lmadapt generate --model BASE "
                           "--expert-adapter RUN/artifact/adapter` or score it with `lmadapt eval`")

    def scores(self, texts: list[str]) -> torch.Tensor:
        raise LmadaptError("an rlhf policy has no label scores; its quality is the reward of its samples")

    def figures(self, task: Task) -> dict:
        out = {"kl_after": self.last_kl}
        if self.before is not None:
            out.update(reward_before=float(self.before["rewards"].mean()), kl_before=float(self.before["kl"].mean()))
        return out

    def save(self, artifact_dir: Path) -> None:
        artifact_dir.mkdir(parents=True, exist_ok=True)
        save_backbone(self.policy.lm, self.tokenizer, artifact_dir)
        save_file({k: v.contiguous() for k, v in self.policy.value_head.state_dict().items()},
                  str(artifact_dir / "value_head.safetensors"))


def _command_group():
    from lmadapt.methods.rlhf.cli import rlhf_app

    return rlhf_app


class Rlhf:
    name = "rlhf"
    config_class = RlhfMethodConfig
    model_kinds = ("causal",)
    task_kinds = ("prompts",)
    trains = True
    demo_note = "needs preference pairs and a reward model (docs/rlhf.md)"
    command_group = staticmethod(_command_group)  # lmadapt rlhf reward | ppo | dpo
    summary = "PPO with a KL penalty against a reward (task of prompts)"

    def _policy(self, cfg: RlhfMethodConfig, ctx: RunContext, task: Task) -> tuple[PolicyWithValue, object, PPOConfig, object]:
        if task.kind != "prompts":
            raise LmadaptError("method 'rlhf' needs a task of prompts; pass --kind prompts (rows with a text field)")
        if not cfg.rlhf_reward:
            raise LmadaptError("method 'rlhf' needs a reward; set rlhf_reward=RUN_DIR (from `lmadapt rlhf reward`) "
                               "or module:function")
        ppo = cfg.ppo(ctx.train.seed)
        policy, tokenizer, _ = load_policy(ctx.model, ppo)
        return policy, tokenizer, ppo, load_reward_fn(cfg.rlhf_reward, ctx.model.device)

    def fit(self, train: Task, eval_task: Task | None, cfg: RlhfMethodConfig,
            ctx: RunContext) -> tuple[RlhfAdapted, TrainResult]:
        policy, tokenizer, ppo, reward_fn = self._policy(cfg, ctx, train)
        before = None
        if eval_task is not None:
            before = evaluate_policy(policy, tokenizer, [eval_task.prompt(t) for t in eval_task.texts()], reward_fn, ppo)
        result = TrainResult()
        began = time.perf_counter()
        log = run_ppo_loop(policy, tokenizer, [train.prompt(t) for t in train.texts()], reward_fn, ppo,
                           ctx.work_dir / "ppo_log.jsonl", lr_key="rlhf_lr")
        result.seconds, result.steps = time.perf_counter() - began, len(log)  # curve: work_dir/ppo_log.jsonl
        return RlhfAdapted(policy, tokenizer, reward_fn, ppo, before), result

    def load(self, artifact_dir: Path, task: Task, cfg: RlhfMethodConfig, ctx: RunContext) -> RlhfAdapted:
        """The saved policy: base + the PEFT adapter folder (or the full model folder) + value head."""
        from transformers import AutoModelForCausalLM

        from lmadapt.models.load import load_tokenizer, resolve_model_ref

        ppo = cfg.ppo(ctx.train.seed)
        ref = resolve_model_ref(ctx.model.model)
        adapter = artifact_dir / "adapter"
        lm = AutoModelForCausalLM.from_pretrained(ref if adapter.is_dir() else str(artifact_dir / "model"),
                                                  dtype=ctx.model.torch_dtype,
                                                  trust_remote_code=ctx.model.trust_remote_code)
        if adapter.is_dir():
            lm = PeftModel.from_pretrained(lm, str(adapter))
        tokenizer = load_tokenizer(ref, "causal", ctx.model.trust_remote_code)
        policy = PolicyWithValue(lm, len(tokenizer)).to(ctx.model.torch_device())
        policy.value_head.load_state_dict(load_file(str(artifact_dir / "value_head.safetensors")))
        # the reward is not loaded here: predicting needs none, and a run folder never imports code
        return RlhfAdapted(policy.eval(), tokenizer, None, ppo, reward_ref=cfg.rlhf_reward,
                           device=ctx.model.device, trust_remote_code=ctx.model.trust_remote_code)
