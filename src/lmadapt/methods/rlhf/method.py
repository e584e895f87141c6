"""Method `rlhf`: PPO against a reward on a task of prompts.

The task is a prompts file (`--kind prompts`, one `text` per row); the training prompts drive the
PPO rollouts and the eval prompts are scored after training. The run's score is the mean
held-out reward (with a bootstrap CI) of sampled continuations, and `record.extra` carries the
mean KL(π‖π_ref), the held-out reward and KL before training and the training curve's ends.
With a LoRA policy the reference is the same model with the adapter off, so no second copy is
held. `lmadapt rlhf ppo` is this method under PPOConfig's unprefixed setting names.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from lmadapt.data.task import Task
from lmadapt.decoding import GenerationConfig, generate
from lmadapt.errors import LmadaptError
from lmadapt.methods.base import Adapted, RunContext
from lmadapt.methods.rlhf.common import load_backbone, save_backbone
from lmadapt.methods.rlhf.config import PREFIX, PPOConfig, RlhfMethodConfig
from lmadapt.methods.rlhf.ppo import PolicyWithValue
from lmadapt.methods.rlhf.ppo_run import evaluate_policy, load_policy, load_reward_fn, run_ppo_loop
from lmadapt.models.load import count_params, load_tokenizer, resolve_model_ref
from lmadapt.train.loop import TrainResult


@dataclass
class RlhfAdapted(Adapted):
    """A PPO-tuned policy; quality is the reward of its sampled continuations, and `predict`
    generates a response to each prompt (greedy).

    A policy loaded from a run folder holds only the reward's reference (`reward_ref`); the reward
    is loaded when a score is asked for, and a Python reward (`file.py:function`,
    `module:function`) named by a run folder is never imported: `use_reward` (`lmadapt eval
    --reward`) supplies it explicitly."""

    policy: PolicyWithValue
    tokenizer: object
    reward_fn: object | None
    cfg: PPOConfig
    before: dict | None = None
    log: list[dict] = field(default_factory=list)
    last_kl: float = 0.0
    reward_ref: str = ""
    device: str = "auto"
    trust_remote_code: bool = False
    template: str = "{text}"
    samples_path: Path | None = None  # during a run: held-out samples go here (after those before)

    def use_reward(self, ref: str) -> bool:
        """Score with `ref` (a reward run folder or module:function / file.py:function)."""
        self.reward_fn = load_reward_fn(ref, self.device, self.trust_remote_code)
        return True

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
        """`cfg.eval_samples` sampled continuations per prompt scored by the reward (fixed seeds);
        the prediction of a prompt is its first sample. In a run, the samples and their rewards
        are added to samples.jsonl (stage "after")."""
        from lmadapt.eval.metrics import bootstrap_mean_ci

        prompts = [task.prompt(t) for t in task.texts()]
        result = evaluate_policy(self.policy, self.tokenizer, prompts, self.reward(), self.cfg)
        rewards = result["rewards"]
        if self.samples_path is not None:
            _write_samples(self.samples_path, "after", result["samples"])
            self.samples_path = None
        self.last_kl = float(np.mean(result["kl"])) if len(result["kl"]) else 0.0
        low, high = bootstrap_mean_ci(rewards, seed=seed)
        per_prompt = np.asarray(rewards, dtype=float).reshape(len(prompts), -1).mean(axis=1)
        scores = {"metric": "heldout_reward", "score": float(rewards.mean()), "ci_low": low, "ci_high": high,
                  "per_example": per_prompt.tolist()}
        return [s["response"] for s in result["samples"][::self.cfg.eval_samples]], scores

    @torch.inference_mode()
    def predict(self, texts: list[str], batch_size: int = 16) -> list[str]:
        """The policy's greedy response to each prompt (up to rlhf_max_new_tokens tokens)."""
        self.policy.eval()
        prompts = [self.template.replace("{text}", t) for t in texts]
        return generate(self.policy.lm, self.tokenizer, prompts,
                        GenerationConfig(max_new_tokens=self.cfg.max_new_tokens), batch_size)

    def figures(self, task: Task) -> dict:
        out = {"kl_after": self.last_kl}
        if self.before is not None:
            out.update(reward_before=float(self.before["rewards"].mean()), kl_before=float(self.before["kl"].mean()))
        if self.log:
            out.update(final_beta=self.log[-1]["beta"], train_reward_first=self.log[0]["reward"],
                       train_reward_last=self.log[-1]["reward"])
        return out

    def save(self, artifact_dir: Path) -> None:
        artifact_dir.mkdir(parents=True, exist_ok=True)
        save_backbone(self.policy.lm, self.tokenizer, artifact_dir)
        save_file({k: v.contiguous() for k, v in self.policy.value_head.state_dict().items()},
                  str(artifact_dir / "value_head.safetensors"))


def _write_samples(path: Path, stage: str, samples: list[dict]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.writelines(json.dumps({"stage": stage, **s}, ensure_ascii=False) + "\n" for s in samples)


class Rlhf:
    name = "rlhf"
    config_class = RlhfMethodConfig
    model_kinds = ("causal",)
    task_kinds = ("prompts",)
    trains = True
    lr_range = None  # its learning rate is rlhf_lr (search it with search_space)
    merge_note = "its policy is already a PEFT folder (artifact/adapter) or a whole model (artifact/model)"
    demo_note = "needs preference pairs and a reward model (docs/rlhf.md)"
    summary = "PPO with a KL penalty against a reward (task of prompts)"

    def fit(self, train: Task, eval_task: Task | None, cfg: RlhfMethodConfig,
            ctx: RunContext) -> tuple[RlhfAdapted, TrainResult]:
        if not cfg.rlhf_reward:
            raise LmadaptError("method 'rlhf' needs a reward; set rlhf_reward=RUN_DIR (a `reward` run) "
                               "or module:function")
        ppo = cfg.ppo(ctx.train.seed)
        reward_fn = load_reward_fn(cfg.rlhf_reward, ctx.model.device)
        policy, tokenizer, _ = load_policy(ctx.model, ppo)
        before, samples = None, ctx.work_dir / "samples.jsonl"
        samples.unlink(missing_ok=True)
        if eval_task is not None:
            before = evaluate_policy(policy, tokenizer, [eval_task.prompt(t) for t in eval_task.texts()], reward_fn, ppo)
            _write_samples(samples, "before", before["samples"])
        result = TrainResult()
        began = time.perf_counter()
        log = run_ppo_loop(policy, tokenizer, [train.prompt(t) for t in train.texts()], reward_fn, ppo,
                           ctx.work_dir / "ppo_log.jsonl", lr_key=PREFIX + "lr", clip_key=PREFIX + "max_grad_norm")
        result.seconds, result.steps = time.perf_counter() - began, len(log)  # curve: work_dir/ppo_log.jsonl
        return RlhfAdapted(policy, tokenizer, reward_fn, ppo, before, log, template=train.template,
                           samples_path=samples), result

    def load(self, artifact_dir: Path, task: Task, cfg: RlhfMethodConfig, ctx: RunContext) -> RlhfAdapted:
        """The saved policy: base + the PEFT adapter folder (or the full model folder, with the
        base as its frozen reference) + value head."""
        ppo = cfg.ppo(ctx.train.seed)
        ref = resolve_model_ref(ctx.model.model)

        def load(path: str) -> torch.nn.Module:
            return AutoModelForCausalLM.from_pretrained(path, dtype=ctx.model.torch_dtype,
                                                        trust_remote_code=ctx.model.trust_remote_code)
        lm = load_backbone(artifact_dir, ref, load)
        tokenizer = load_tokenizer(ref, "causal", ctx.model.trust_remote_code)
        policy = PolicyWithValue(lm, len(tokenizer))
        if policy.reference is not None:  # a full policy: its reference is the base model, not itself
            policy.__dict__["reference"] = load(ref).requires_grad_(False).eval().to(ctx.model.torch_device())
        policy = policy.to(ctx.model.torch_device())
        policy.value_head.load_state_dict(load_file(str(artifact_dir / "value_head.safetensors")))
        # the reward is not loaded here: predicting needs none, and a run folder never imports code
        return RlhfAdapted(policy.eval(), tokenizer, None, ppo, reward_ref=cfg.rlhf_reward,
                           device=ctx.model.device, trust_remote_code=ctx.model.trust_remote_code,
                           template=task.template or "{text}")
