"""report_to: a run's training steps, per-epoch scores and record go to accelerate's trackers;
a tracker whose package is missing is a one-line error naming what to install."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmadapt.data import DataSpec, load_train_eval
from lmadapt.errors import LmadaptError
from lmadapt.methods.head import HeadConfig
from lmadapt.models.load import ModelSpec
from lmadapt.run import tune
from lmadapt.train import trackers
from lmadapt.train.config import TrainConfig


def _tune(tiny_bert: Path, toy_data: tuple[Path, Path], out: Path, report_to: str):
    train, evals = load_train_eval(toy_data[0], toy_data[1], DataSpec())
    cfg = TrainConfig(epochs=2, batch_size=16, max_length=32, report_to=report_to)
    return tune("head", ModelSpec(model=str(tiny_bert), device="cpu"), train, evals, HeadConfig(), cfg, out)


def test_tensorboard_run_writes_event_files_with_the_runs_figures(tiny_bert, toy_data, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    record = _tune(tiny_bert, toy_data, tmp_path / "run", "tensorboard")
    folder = tmp_path / "run" / "trackers" / "tensorboard"
    events = sorted(folder.glob("events.out.tfevents.*"))
    assert events and all(e.stat().st_size > 0 for e in events)
    acc = EventAccumulator(str(folder))
    acc.Reload()
    scalars = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    steps = record.train_steps  # 64 examples, batch 16, 2 epochs: 8 steps
    assert [s for s, _ in scalars["train/loss"]] == list(range(1, steps + 1))
    assert {"train/lr", "train/tokens_per_second"} <= set(scalars)
    assert scalars["epoch_eval/score"] == [(steps // 2, pytest.approx(scalars["epoch_eval/score"][0][1]))]
    assert scalars["record/score"] == [(steps, pytest.approx(record.score))]
    assert scalars["record/final_loss"] == [(steps, pytest.approx(record.final_loss))]


def test_tracker_without_its_package_is_one_line(tiny_bert, toy_data, tmp_path, monkeypatch):
    monkeypatch.setitem(trackers.TRACKERS, "wandb", ("wandb", lambda: False))
    with pytest.raises(LmadaptError) as err:
        _tune(tiny_bert, toy_data, tmp_path / "run", "tensorboard,wandb")
    assert str(err.value) == "report_to=wandb needs `pip install wandb` (or lmadapt[wandb])"
    assert not (tmp_path / "run").exists()  # refused before anything was trained or written


def test_report_to_names_are_checked_with_the_settings():
    assert trackers.parse_report_to(" TensorBoard, mlflow,tensorboard ") == ["tensorboard", "mlflow"]
    assert trackers.parse_report_to("") == []
    with pytest.raises(LmadaptError, match="unknown report_to 'comet'; use a comma list of tensorboard"):
        TrainConfig(report_to="tensorboard,comet")
