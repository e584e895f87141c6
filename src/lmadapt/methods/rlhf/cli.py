"""`lmadapt rlhf reward | ppo | dpo`: the three RLHF stages from the terminal.

Settings come from the stage's dataclasses (`--config run.yaml` and trailing `key=value`), like
`lmadapt tune`; see each command's --help for the list.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Annotated

import typer

from lmadapt.config import build_configs, describe, load_yaml, parse_overrides
from lmadapt.errors import LmadaptError
from lmadapt.methods.rlhf.config import DPOConfig, PPOConfig, RewardConfig
from lmadapt.methods.rlhf.data import PreferencePair, load_preferences, load_prompts
from lmadapt.models.load import ModelSpec
from lmadapt.train.config import TrainConfig

rlhf_app = typer.Typer(help="RLHF: train a reward model, then tune a policy with PPO, or use DPO.",
                       no_args_is_help=True)
EXTRA = {"allow_extra_args": True, "ignore_unknown_options": False}

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="hub id, local path or pull name")]
PairsOpt = Annotated[str, typer.Option("--train", help="preference pairs: rows with prompt, chosen, rejected")]
EvalPairsOpt = Annotated[str | None, typer.Option("--eval", help="held-out pairs (default: 20% of --train)")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="output folder (written atomically)")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="write into an --out folder that holds other files (lmadapt's earlier output there is replaced; your files stay)")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML file of settings (key: value)")]
DtypeOpt = Annotated[str, typer.Option(help="float32 | bfloat16 | float16")]
DeviceOpt = Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N | mps")]


def _settings(config: Path | None, extra: list[str]) -> dict:
    return {**load_yaml(config), **parse_overrides(extra)}


def _resolve_data(ref: str) -> str:
    try:
        from lmadapt.assets import resolve_data
    except ImportError:
        return ref
    return resolve_data(ref)


def _pairs(train: str, eval_ref: str | None, seed: int) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Train and held-out pairs: the --eval file, else a seeded 20% split of --train."""
    if not train:
        raise LmadaptError("no preference data given; pass --train FILE (prompt, chosen, rejected)")
    pairs = load_preferences(_resolve_data(train))
    if eval_ref:
        return pairs, load_preferences(_resolve_data(eval_ref))
    if len(pairs) < 5:
        raise LmadaptError(f"only {len(pairs)} pairs in {train}; pass --eval or add pairs to split off 20%")
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, len(pairs) // 5)
    return [pairs[i] for i in sorted(order[n_eval:])], [pairs[i] for i in sorted(order[:n_eval])]


def _spec(model: str, dtype: str, device: str) -> ModelSpec:
    if not model:
        raise LmadaptError("no model given; pass --model with a hub id, a local path or a pull name")
    return ModelSpec(model=model, dtype=dtype, device=device)


@rlhf_app.command(context_settings=EXTRA, epilog=describe([TrainConfig, RewardConfig]))
def reward(ctx: typer.Context, model: ModelOpt = "", train: PairsOpt = "", eval: EvalPairsOpt = None,
           out: OutOpt = Path("runs/reward"), config: ConfigOpt = None, dtype: DtypeOpt = "float32",
           device: DeviceOpt = "auto", overwrite: OverwriteOpt = False) -> None:
    """Train a scalar-head reward model (Bradley-Terry loss); score = held-out pairwise accuracy."""
    from lmadapt.methods.rlhf.reward import train_reward_model

    configs = build_configs([TrainConfig, RewardConfig], _settings(config, ctx.args))
    train_cfg = configs[TrainConfig]
    train_pairs, eval_pairs = _pairs(train, eval, train_cfg.seed)
    record = train_reward_model(_spec(model, dtype, device), train_pairs, eval_pairs, configs[RewardConfig],
                                train_cfg, out, task=Path(train).stem, overwrite=overwrite,
                                inputs=(train, eval or ""))
    print(f"reward model: pairwise accuracy {record.score:.4f} (95% CI {record.ci_low:.4f}–{record.ci_high:.4f}) "
          f"on {record.eval_examples} held-out pairs")
    print(out / "record.json")


@rlhf_app.command(context_settings=EXTRA, epilog=describe([PPOConfig]))
def ppo(ctx: typer.Context, model: ModelOpt = "",
        prompts: Annotated[str, typer.Option(help="training prompts: .jsonl/.csv (prompt or text field) or .txt")] = "",
        eval_prompts: Annotated[str, typer.Option(help="held-out prompts, scored before and after")] = "",
        reward: Annotated[str, typer.Option(help="a `lmadapt rlhf reward` folder, or module:function / file.py:function")] = "",
        out: OutOpt = Path("runs/ppo"), config: ConfigOpt = None, dtype: DtypeOpt = "float32",
        device: DeviceOpt = "auto",
        quiet: Annotated[bool, typer.Option(help="no progress bar")] = False, overwrite: OverwriteOpt = False) -> None:
    """Tune a causal-LM policy with PPO against a reward (per-token KL penalty to the reference)."""
    from lmadapt.methods.rlhf.ppo_run import train_ppo

    cfg = build_configs([PPOConfig], _settings(config, ctx.args))[PPOConfig]
    if not prompts or not reward:
        raise LmadaptError("PPO needs --prompts FILE and --reward (a reward-model folder or module:function)")
    train_prompts = load_prompts(_resolve_data(prompts))
    held_out = load_prompts(_resolve_data(eval_prompts)) if eval_prompts else train_prompts[: max(1, len(train_prompts) // 5)]
    record = train_ppo(_spec(model, dtype, device), train_prompts, held_out, reward, cfg, out,
                       task=Path(prompts).stem, show_progress=not quiet, overwrite=overwrite,
                       inputs=(prompts, eval_prompts))
    extra = record.extra
    print(f"held-out reward {extra['reward_before']:.4f} → {record.score:.4f} "
          f"(95% CI {record.ci_low:.4f}–{record.ci_high:.4f}); KL {extra['kl_before']:.4f} → {extra['kl_after']:.4f}")
    print(out / "record.json")


@rlhf_app.command(context_settings=EXTRA, epilog=describe([TrainConfig, DPOConfig]))
def dpo(ctx: typer.Context, model: ModelOpt = "", train: PairsOpt = "", eval: EvalPairsOpt = None,
        out: OutOpt = Path("runs/dpo"), config: ConfigOpt = None, dtype: DtypeOpt = "float32",
        device: DeviceOpt = "auto", overwrite: OverwriteOpt = False) -> None:
    """Tune a causal LM on preference pairs with DPO; score = held-out implicit-reward accuracy."""
    from lmadapt.methods.rlhf.dpo import train_dpo

    configs = build_configs([TrainConfig, DPOConfig], _settings(config, ctx.args))
    train_cfg = configs[TrainConfig]
    train_pairs, eval_pairs = _pairs(train, eval, train_cfg.seed)
    record = train_dpo(_spec(model, dtype, device), train_pairs, eval_pairs, configs[DPOConfig], train_cfg,
                       out, task=Path(train).stem, overwrite=overwrite, inputs=(train, eval or ""))
    print(f"DPO: implicit-reward accuracy {record.extra['accuracy_before']:.4f} → {record.score:.4f} "
          f"(95% CI {record.ci_low:.4f}–{record.ci_high:.4f})")
    print(out / "record.json")
