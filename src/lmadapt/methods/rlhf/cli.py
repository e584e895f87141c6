"""`lmadapt rlhf reward | ppo | dpo`: the three RLHF methods under their familiar commands.

Each is a thin alias of `lmadapt tune --method reward | rlhf | dpo`: it parses its options and
settings (`--config run.yaml` and trailing `key=value`; `ppo` takes PPOConfig's names, which
tune spells `rlhf_<name>`), loads the data and runs `ctx.obj.tune` (lmadapt.cli.Services), so
every run folder is a common one that `eval`, `predict`, `load_run` and `compare` open.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from lmadapt.config import build_configs, describe, load_yaml, parse_overrides
from lmadapt.data.loaders import DataSpec, load_task, load_train_eval
from lmadapt.data.task import Example, Task, split_task
from lmadapt.errors import LmadaptError
from lmadapt.methods.rlhf.config import DPOConfig, PPOConfig, RewardConfig, RlhfMethodConfig
from lmadapt.methods.rlhf.data import load_prompts, read_preferences
from lmadapt.train.config import TrainConfig

if TYPE_CHECKING:
    from lmadapt.models.load import ModelSpec

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


def _pairs(train: str, eval_ref: str | None, seed: int) -> tuple[Task, Task]:
    """Train and held-out pairs: the --eval file, else a seeded 20% split of --train."""
    if not train:
        raise LmadaptError("no preference data given; pass --train FILE (prompt, chosen, rejected)")
    spec = DataSpec(kind="preferences")
    if eval_ref:
        return load_train_eval(_resolve_data(train), _resolve_data(eval_ref), spec, readers=[read_preferences])
    task = load_task(_resolve_data(train), spec, readers=[read_preferences])
    if len(task.examples) < 5:
        raise LmadaptError(f"only {len(task.examples)} pairs in {train}; pass --eval or add pairs to split off 20%")
    return split_task(task, 0.2, seed)


def _spec(model: str, dtype: str, device: str) -> ModelSpec:
    from lmadapt.models.load import ModelSpec  # transformers, torch: only once a command runs

    if not model:
        raise LmadaptError("no model given; pass --model with a hub id, a local path or a pull name")
    return ModelSpec(model=model, dtype=dtype, device=device)


def _prompt_task(ref: str, name: str) -> Task:
    prompts = load_prompts(_resolve_data(ref))
    return Task(name=name, kind="prompts", examples=[Example(text=p, target="", source=f"{ref}:{i + 1}")
                                                     for i, p in enumerate(prompts)])


@contextlib.contextmanager
def _quiet(on: bool) -> Iterator[None]:
    """No progress bars while on (tqdm reads TQDM_DISABLE)."""
    old = os.environ.get("TQDM_DISABLE")
    if on:
        os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        if on and old is None:
            os.environ.pop("TQDM_DISABLE", None)
        elif on:
            os.environ["TQDM_DISABLE"] = old


PPO_KEYS = {f.name for f in fields(PPOConfig)}


def _ppo_names(err: LmadaptError) -> LmadaptError:
    """tune's `rlhf_<name>` settings in a message, as this command spells them (`<name>`)."""
    return LmadaptError(re.sub(r"\brlhf_(\w+)", lambda m: m[1] if m[1] in PPO_KEYS else m[0], str(err)))


@rlhf_app.command(context_settings=EXTRA, epilog=describe([TrainConfig, RewardConfig]))
def reward(ctx: typer.Context, model: ModelOpt = "", train: PairsOpt = "", eval: EvalPairsOpt = None,
           out: OutOpt = Path("runs/reward"), config: ConfigOpt = None, dtype: DtypeOpt = "float32",
           device: DeviceOpt = "auto", overwrite: OverwriteOpt = False) -> None:
    """Train a scalar-head reward model (Bradley-Terry loss); score = held-out pairwise accuracy.
    The same as `lmadapt tune --method reward`."""
    configs = build_configs([TrainConfig, RewardConfig], _settings(config, ctx.args))
    train_cfg = configs[TrainConfig]
    train_task, eval_task = _pairs(train, eval, train_cfg.seed)
    record = ctx.obj.tune("reward", _spec(model, dtype, device), train_task, eval_task, configs[RewardConfig],
                          train_cfg, out, overwrite=overwrite)
    print(f"reward model: pairwise accuracy {record.score:.4f} (95% CI {record.ci_low:.4f}–{record.ci_high:.4f}) "
          f"on {record.eval_examples} held-out pairs")
    print(out / "record.json")


@rlhf_app.command(context_settings=EXTRA, epilog=describe([PPOConfig]))
def ppo(ctx: typer.Context, model: ModelOpt = "",
        prompts: Annotated[str, typer.Option(help="training prompts: .jsonl/.csv (prompt or text field) or .txt")] = "",
        eval_prompts: Annotated[str, typer.Option(help="held-out prompts, scored before and after")] = "",
        reward: Annotated[str, typer.Option(help="a `reward` run folder (`lmadapt rlhf reward`), or module:function / file.py:function")] = "",
        out: OutOpt = Path("runs/ppo"), config: ConfigOpt = None, dtype: DtypeOpt = "float32",
        device: DeviceOpt = "auto",
        quiet: Annotated[bool, typer.Option(help="no progress bar")] = False, overwrite: OverwriteOpt = False) -> None:
    """Tune a causal-LM policy with PPO against a reward (per-token KL penalty to the reference).
    The same as `lmadapt tune --method rlhf --kind prompts` with each setting named rlhf_<setting>."""
    cfg = build_configs([PPOConfig], _settings(config, ctx.args))[PPOConfig]
    if not prompts or not reward:
        raise LmadaptError("PPO needs --prompts FILE and --reward (a reward-model folder or module:function)")
    train_task = _prompt_task(prompts, Path(prompts).stem)
    held_out = (_prompt_task(eval_prompts, f"{train_task.name}:eval") if eval_prompts else
                train_task.with_examples(train_task.examples[: max(1, len(train_task.examples) // 5)], ":eval"))
    try:
        with _quiet(quiet):
            record = ctx.obj.tune("rlhf", _spec(model, dtype, device), train_task, held_out,
                                  RlhfMethodConfig.from_ppo(cfg, reward), TrainConfig(seed=cfg.seed), out,
                                  overwrite=overwrite)
    except LmadaptError as err:
        raise _ppo_names(err) from None
    extra = record.extra
    print(f"held-out reward {extra['reward_before']:.4f} → {record.score:.4f} "
          f"(95% CI {record.ci_low:.4f}–{record.ci_high:.4f}); KL {extra['kl_before']:.4f} → {extra['kl_after']:.4f}")
    print(out / "record.json")


@rlhf_app.command(context_settings=EXTRA, epilog=describe([TrainConfig, DPOConfig]))
def dpo(ctx: typer.Context, model: ModelOpt = "", train: PairsOpt = "", eval: EvalPairsOpt = None,
        out: OutOpt = Path("runs/dpo"), config: ConfigOpt = None, dtype: DtypeOpt = "float32",
        device: DeviceOpt = "auto", overwrite: OverwriteOpt = False) -> None:
    """Tune a causal LM on preference pairs with DPO; score = held-out implicit-reward accuracy.
    The same as `lmadapt tune --method dpo`."""
    configs = build_configs([TrainConfig, DPOConfig], _settings(config, ctx.args))
    train_cfg = configs[TrainConfig]
    train_task, eval_task = _pairs(train, eval, train_cfg.seed)
    record = ctx.obj.tune("dpo", _spec(model, dtype, device), train_task, eval_task, configs[DPOConfig], train_cfg,
                          out, overwrite=overwrite)
    print(f"DPO: implicit-reward accuracy {record.extra['accuracy_before']:.4f} → {record.score:.4f} "
          f"(95% CI {record.ci_low:.4f}–{record.ci_high:.4f})")
    print(out / "record.json")
