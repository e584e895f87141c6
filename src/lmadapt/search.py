"""Per-method hyperparameter search on the validation set, through Optuna.

Each trainable method's learning rate is searched on a log scale within the range the method
declares (`lr_range`), together with any `search_space` keys the user gives that belong to the
method's settings. A trial is a run trained on the training part and scored on the validation
set — never on the eval set. TPE (seeded) proposes, the median pruner stops trials whose
per-epoch validation score trails the others'. The study lives in an Optuna storage: SQLite in the
compare folder by default, or any Optuna RDB URL (`search_storage=postgresql://...`), so several
machines running the same command work on one study (Optuna's own distributed mode).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import socket
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from lmadapt.config import config_keys
from lmadapt.data.task import Task
from lmadapt.errors import LmadaptError
from lmadapt.methods import get_method
from lmadapt.models.load import ModelSpec
from lmadapt.train.config import TrainConfig
from lmadapt.utils import partial_dir

console = Console(stderr=True)


@dataclass(frozen=True)
class Param:
    """One searched setting: a numeric range (`low`..`high`, optionally log scale) or choices."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple = ()

    def suggest(self, trial: Any) -> Any:
        if self.choices:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log)

    def contains(self, value: Any) -> bool:
        if self.choices:
            return value in self.choices
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        return numeric and self.low <= value <= self.high and (not self.integer or float(value).is_integer())


def parse_space(data: Any, where: str) -> dict[str, Param]:
    """A search space from its YAML form: `key: [a, b, c]` (choices) or
    `key: {low: L, high: H, log: true}` (a range; integers when both ends are)."""
    if not isinstance(data, dict) or not data:
        raise LmadaptError(f"{where}: a search space is a mapping of setting -> [choices] or {{low, high, log}}")
    space = {}
    for key, spec in data.items():
        if isinstance(spec, list):
            if not spec or any(isinstance(v, (dict, list)) for v in spec):
                raise LmadaptError(f"{where}: {key}: give a non-empty list of plain values")
            space[key] = Param(key, choices=tuple(spec))
        elif isinstance(spec, dict):
            unknown = set(spec) - {"low", "high", "log"}
            low, high = _number(spec.get("low")), _number(spec.get("high"))
            numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high))
            if unknown or not numbers or not low < high or (spec.get("log") and low <= 0):
                raise LmadaptError(f"{where}: {key}: a range is {{low: L, high: H, log: true|false}} with L < H "
                                   "(and L > 0 on a log scale)")
            space[key] = Param(key, low, high, bool(spec.get("log", False)),
                               isinstance(low, int) and isinstance(high, int))
        else:
            raise LmadaptError(f"{where}: {key}: expected [choices] or {{low, high, log}}, got {spec!r}")
    return space


def _number(value: Any) -> Any:
    """YAML reads `1e-5` (no dot) as a string; take it as the number it spells."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def load_space(ref: str) -> dict[str, Param]:
    """`search_space=`: a YAML file, or the mapping itself inline (`'{lora_r: [4, 8, 16]}'`)."""
    import yaml

    if not ref:
        return {}
    path = Path(ref)
    try:
        text = path.read_text(encoding="utf-8") if path.is_file() else ref
        data = yaml.safe_load(text)
    except (OSError, yaml.YAMLError) as err:
        raise LmadaptError(f"search_space {ref}: not readable YAML ({type(err).__name__})") from None
    if isinstance(data, str):
        raise LmadaptError(f"search_space {ref!r}: no such file, and not an inline mapping")
    return parse_space(data, f"search_space {ref}")


def check_space_keys(space: dict[str, Param], config_classes: list[type]) -> None:
    """Every searched key is a setting of some method in the compare (or a train setting)."""
    owners = config_keys([*config_classes, TrainConfig])
    for key in space:
        if key not in owners:
            raise LmadaptError(f"search_space: {key!r} is not a setting of these methods or of training")


def method_space(name: str, cfg: Any, space: dict[str, Param]) -> dict[str, Param]:
    """What is searched for one method: its learning rate over its declared range (unless the
    space names lr) and the space's keys that are its own settings or train settings."""
    own = {f.name for f in dataclasses.fields(type(cfg))} | set(TrainConfig.__dataclass_fields__)
    out = {k: p for k, p in space.items() if k in own}
    lr_range = get_method(name).lr_range
    if "lr" not in out and lr_range is not None:
        out["lr"] = Param("lr", lr_range[0], lr_range[1], log=True)
    return out


def default_point(name: str, cfg: Any, train_cfg: TrainConfig, space: dict[str, Param]) -> dict[str, Any]:
    """The values a run without search uses, for the searched keys whose default lies in the
    space: a study's first trial, so the search never selects a configuration that scored below
    the defaults on validation (keys left out, e.g. a default outside its range, are sampled)."""
    from lmadapt.methods.base import default_lr

    point = {}
    for key, param in space.items():
        if key == "lr":
            value = train_cfg.lr or default_lr(get_method(name), cfg)
        else:
            value = getattr(cfg, key) if hasattr(cfg, key) else getattr(train_cfg, key, None)
        if value is not None and param.contains(value):
            point[key] = value
    return point


def apply_params(params: dict[str, Any], cfg: Any, train_cfg: TrainConfig) -> tuple[Any, TrainConfig]:
    """The method and train configs with the searched values put in (validated as usual)."""
    own = {f.name for f in dataclasses.fields(type(cfg))}
    cfg = dataclasses.replace(cfg, **{k: v for k, v in params.items() if k in own})
    train_cfg = dataclasses.replace(train_cfg, **{k: v for k, v in params.items() if k not in own})
    return cfg, train_cfg


@dataclass
class SearchResult:
    params: dict[str, Any] = field(default_factory=dict)  # the best trial's (empty: defaults)
    value: float | None = None  # its validation score
    trials: int = 0  # finished trials (complete or pruned), all processes together
    study: str = ""
    run_dir: Path | None = None  # the best trial's run folder, when this process ran it (else None)


def storage_url(ref: str, folder: Path) -> str:
    """`search_storage=`: empty = SQLite in the compare folder; else an Optuna RDB URL as given."""
    if not ref:
        return f"sqlite:///{(Path(folder) / 'search.sqlite').resolve()}"
    if "://" not in ref:
        raise LmadaptError(f"search_storage={ref!r} is not a database URL; use e.g. sqlite:///search.db or "
                           "postgresql://user@host/db")
    return ref


def study_name(label: str, settings: dict) -> str:
    """One study per method and settings: the same command on another machine joins it."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"lmadapt-{label}-{digest}"


def search(label: str, name: str, model: ModelSpec, train_task: Task, val_task: Task, cfg: Any,
           train_cfg: TrainConfig, space: dict[str, Param], trials: int, storage: str, folder: Path,
           settings: dict) -> SearchResult:
    """Run up to `trials` finished trials (counting other processes' on the same study) and return
    the best. A trial that fails with a one-line error (e.g. divergence at a high learning rate)
    is recorded as failed and the search goes on."""
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    from lmadapt.run import tune
    from lmadapt.train.loop import epoch_scores

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = storage_url(storage, folder)
    with warnings.catch_warnings():  # heartbeats (stale trials of a killed process fail) are "experimental"
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        rdb = optuna.storages.RDBStorage(url, heartbeat_interval=60, grace_period=180)
    name_ = study_name(label, settings)
    study = optuna.create_study(
        study_name=name_, storage=rdb, direction="maximize", load_if_exists=True,
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0))
    # seeded; a study that already holds trials (a resume, another worker) gets its own stream, so
    # the sampler's first random draws do not repeat the parameters of trials already run
    study.sampler = optuna.samplers.TPESampler(seed=train_cfg.seed + len(study.trials))
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    trial_root = Path(folder) / "search" / label
    # the best trial's run folder is kept (the final run with the first seed reuses its fit, see
    # compare); any other folder there is an interrupted trial's (lmadapt's own, inside the compare)
    kept: dict[str, Any] = {"dir": None, "value": None}
    if (best := _best(study)) is not None and (trial_root / f"trial-{best.number}" / "record.json").is_file():
        kept.update(dir=trial_root / f"trial-{best.number}", value=best.value)
    _clear(trial_root, keep=kept["dir"])

    def objective(trial: Any) -> float:
        params = {p.name: p.suggest(trial) for p in space.values()}
        method_cfg, run_cfg = apply_params(params, cfg, train_cfg)
        run_dir = trial_root / f"trial-{trial.number}"

        def prune(epoch: int, score: float) -> None:
            trial.report(score, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"validation {score:.3f} after epoch {epoch}")

        console.print(f"[dim]{label} trial {trial.number}: "
                      + ", ".join(f"{k}={_fmt(v)}" for k, v in params.items()) + "[/dim]")
        record = None
        try:
            with epoch_scores(prune):
                record = tune(name, model, train_task, val_task, method_cfg,
                              dataclasses.replace(run_cfg, resume=False, save_every=0),
                              run_dir, lock=False, overwrite=True, val_task=val_task)
        finally:
            shutil.rmtree(partial_dir(run_dir), ignore_errors=True)
            if record is not None and (kept["value"] is None or record.score > kept["value"]):
                if kept["dir"] is not None:
                    shutil.rmtree(kept["dir"], ignore_errors=True)
                kept.update(dir=run_dir, value=record.score)  # ties keep the earlier trial, as _best does
            else:
                shutil.rmtree(run_dir, ignore_errors=True)
        trial.set_user_attr("train_seconds", record.train_seconds)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        return record.score

    if first := default_point(name, cfg, train_cfg, space):
        study.enqueue_trial(first, skip_if_exists=True)  # once per study, across resumes and workers
    done = sum(t.state in finished for t in study.trials)
    if done < trials:
        console.print(f"{label}: search, {trials - done} of {trials} trials to run "
                      f"(study {name_} in {url.split('://')[0]})")
        study.optimize(objective, n_trials=trials - done, catch=(LmadaptError,),
                       callbacks=[MaxTrialsCallback(trials, states=finished)])
    result = SearchResult(trials=sum(t.state in finished for t in study.trials), study=name_)
    if (best := _best(study)) is not None:
        result.params, result.value = dict(best.params), float(best.value)
        mine = trial_root / f"trial-{best.number}"
        result.run_dir = mine if mine == kept["dir"] and (mine / "record.json").is_file() else None
    _clear(trial_root, keep=result.run_dir)
    return result


def _best(study: Any) -> Any:
    """The best complete trial (the earliest among equal scores); None when none completed."""
    from optuna.trial import TrialState

    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    return max(complete, key=lambda t: (t.value, -t.number)) if complete else None


def _clear(trial_root: Path, keep: Path | None) -> None:
    """Remove the trial folders under trial_root but `keep` (and trial_root and its parent when
    left empty)."""
    if trial_root.is_dir():
        for child in trial_root.iterdir():
            if child != keep:
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    remove_empty(trial_root)


def remove_empty(trial_root: Path) -> None:
    """trial_root, then its parent (the compare's search/ folder), each if it exists and is empty."""
    for folder in (trial_root, trial_root.parent):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
