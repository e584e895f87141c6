"""Experiment trackers: `report_to=tensorboard,wandb,mlflow,trackio` through accelerate's own
tracker classes (`accelerate.tracking`).

`run.tune` opens one `tracking` block around a run (fit, evaluation, record); inside it the
training loop reports each optimizer step (`train/loss`, `train/lr`, `train/tokens_per_second`)
and each per-epoch score (`epoch_eval/score`), and `tune` the finished record's numbers
(`record/score`, `record/ci_low`, ...). Only the main process reports. Where the output goes:
- tensorboard: event files in RUN/trackers/tensorboard/;
- wandb: its run files under RUN/trackers/ (unless WANDB_DIR is set), project `lmadapt`, the run
  named after the run folder; online or offline as wandb is set up (WANDB_MODE);
- mlflow, trackio: their own store (MLFLOW_TRACKING_URI; trackio's local database), experiment or
  project `lmadapt`, the run named after the run folder.
The run's own files (train_log.jsonl, record.json, runs.sqlite) are written either way.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from lmadapt.errors import LmadaptError

PROJECT = "lmadapt"


def _available(name: str) -> Callable[[], bool]:
    """accelerate's own check that tracker `name`'s package is importable (read at call time)."""
    def check() -> bool:
        from accelerate.utils import imports

        return bool(getattr(imports, f"is_{name}_available")())
    return check


# report_to name -> (what to pip install, whether it is installed)
TRACKERS: dict[str, tuple[str, Callable[[], bool]]] = {
    "tensorboard": ("tensorboard", _available("tensorboard")),
    "wandb": ("wandb", _available("wandb")),
    "mlflow": ("mlflow", _available("mlflow")),
    "trackio": ("trackio", _available("trackio")),
}


def parse_report_to(report_to: str) -> list[str]:
    """The tracker names of a comma list ("" = none), checked against TRACKERS, in order, once each."""
    names = list(dict.fromkeys(part.strip().lower() for part in report_to.split(",") if part.strip()))
    unknown = [name for name in names if name not in TRACKERS]
    if unknown:
        raise LmadaptError(f"unknown report_to {unknown[0]!r}; use a comma list of {', '.join(TRACKERS)}")
    return names


def check_installed(names: list[str]) -> None:
    """One-line error naming what to install for the first tracker whose package is missing."""
    for name in names:
        package, available = TRACKERS[name]
        if not available():
            raise LmadaptError(f"report_to={name} needs `pip install {package}` (or lmadapt[{name}])")


class Tracking:
    """accelerate trackers of one run; `log` sends scalar values to each at an optimizer step."""

    def __init__(self, names: list[str], run_dir: Path, run_name: str, config: dict) -> None:
        from accelerate.tracking import LOGGER_TYPE_TO_CLASS

        folder = Path(run_dir) / "trackers"
        kwargs: dict[str, dict[str, Any]] = {
            "tensorboard": {"run_name": "tensorboard", "logging_dir": folder},
            "wandb": {"run_name": PROJECT, "name": run_name,
                      **({} if os.environ.get("WANDB_DIR") else {"dir": str(folder)})},
            "mlflow": {"experiment_name": PROJECT, "run_name": run_name},
            "trackio": {"run_name": PROJECT, "name": run_name},
        }
        if "tensorboard" in names or ("wandb" in names and not os.environ.get("WANDB_DIR")):
            folder.mkdir(parents=True, exist_ok=True)
        missing = [name for name in names if name not in LOGGER_TYPE_TO_CLASS]
        if missing:
            raise LmadaptError(f"report_to={missing[0]} needs a newer accelerate (`pip install -U accelerate`)")
        self.trackers = [LOGGER_TYPE_TO_CLASS[name](**kwargs[name]) for name in names]
        self.last_step = 0
        for tracker in self.trackers:
            tracker.start()
            tracker.store_init_configuration(_flat(config))

    def log(self, values: dict[str, float], step: int) -> None:
        self.last_step = max(self.last_step, step)
        for tracker in self.trackers:
            tracker.log(values, step=step)

    def finish(self) -> None:
        for tracker in self.trackers:
            tracker.finish()


_CURRENT: ContextVar[Tracking | None] = ContextVar("tracking", default=None)


@contextlib.contextmanager
def tracking(report_to: str, run_dir: Path, run_name: str, config: dict) -> Iterator[Tracking | None]:
    """Within the block, training steps, per-epoch scores and the record go to the trackers
    named in `report_to` (none: nothing happens). Only the main process reports."""
    names = parse_report_to(report_to)
    if names:
        check_installed(names)
    from accelerate import PartialState  # only when tracking: it sets up the process state

    if not names or not PartialState().is_main_process:
        yield None
        return
    run = Tracking(names, run_dir, run_name, config)
    token = _CURRENT.set(run)
    try:
        yield run
    finally:
        _CURRENT.reset(token)
        run.finish()


def log_train_step(step: int, loss: float, lr: float, tokens_per_second: float) -> None:
    """One optimizer step's figures, when a `tracking` block is open."""
    if (run := _CURRENT.get()) is not None:
        run.log({"train/loss": loss, "train/lr": lr, "train/tokens_per_second": tokens_per_second}, step)


def log_epoch_eval(step: int, epoch_eval: dict) -> None:
    """A per-epoch evaluation ({"epoch": e, "score": s, ...}) at the step that ended the epoch."""
    if (run := _CURRENT.get()) is not None:
        run.log({f"epoch_eval/{k}": float(v) for k, v in epoch_eval.items() if _number(v)}, step)


def log_record(record: Any) -> None:
    """The record's numbers (score, CI, speed, memory, sizes) at the run's last step."""
    if (run := _CURRENT.get()) is not None:
        values = {f"record/{k}": float(v) for k, v in vars(record).items() if _number(v)}
        run.log(values, run.last_step)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _flat(config: dict, prefix: str = "") -> dict[str, str | int | float | bool]:
    """A nested settings dict as flat `a/b` keys with scalar values (what every tracker takes)."""
    flat: dict[str, str | int | float | bool] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flat(value, f"{name}/"))
        elif isinstance(value, str | int | float | bool):
            flat[name] = value
        elif value is not None:
            flat[name] = str(value)
    return flat
