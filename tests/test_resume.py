"""Resume is safe and strict (issue 11, class 4): checkpoints record the settings that shape them,
a resume under other settings is refused with one line and keeps the checkpoints, a resumed run
keeps its per-epoch evals, and a resumed compare re-runs only unfinished methods."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import lmadapt.train.loop as loop
from lmadapt.errors import LmadaptError
from lmadapt.methods.zero_shot.method import ZeroShot
from lmadapt.run import first_difference
from lmadapt.train.checkpoint import latest_checkpoint, load_checkpoint
from tiny import toy_rows, write_jsonl


def _interrupt_after_checkpoint(monkeypatch, at_step: int) -> None:
    """Make the loop 'crash' (Ctrl-C) right after it saves the checkpoint of step at_step."""
    original = loop.save_checkpoint

    def save_then_stop(root, step, *args, **kwargs):
        path = original(root, step, *args, **kwargs)
        if step == at_step:
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(loop, "save_checkpoint", save_then_stop)


def _spy_on_load(monkeypatch) -> list[str]:
    """Names of the checkpoints the loop resumes from."""
    loaded: list[str] = []
    original = loop.load_checkpoint
    monkeypatch.setattr(loop, "load_checkpoint", lambda path, *a: loaded.append(path.name) or original(path, *a))
    return loaded


def _head(tiny_bert, train, eval_, out, *extra) -> list:
    return ["tune", "--method", "head", "--model", tiny_bert, "--train", train, "--eval", eval_, "--out", out,
            "epochs=2", "batch_size=8", "save_every=4", *extra]


def _checkpoints(out: Path) -> dict[str, bytes]:
    root = out.with_name(f".{out.name}.partial") / "checkpoints"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_refused_resume_names_the_key_and_keeps_checkpoints(run_cli, monkeypatch, tiny_bert, toy_data, tmp_path):
    out = tmp_path / "run"
    train, eval_ = toy_data
    with monkeypatch.context() as patch:
        _interrupt_after_checkpoint(patch, 8)  # end of epoch 1 (8 steps of 8 examples)
        code, _ = run_cli(_head(tiny_bert, train, eval_, out))
    assert code == 130 and not out.exists()
    kept = _checkpoints(out)
    assert "settings.json" in kept and "step-8/trainable.safetensors" in kept
    other_data = write_jsonl(tmp_path / "other.jsonl", toy_rows(64, seed=9))
    for extra, key in [(["lr=0.5"], "train.lr"), (["unfreeze_last=1"], "method_config.unfreeze_last"),
                       (["epochs=3"], "train.epochs")]:
        code, err = run_cli(_head(tiny_bert, train, eval_, out, "resume=true", *extra))
        assert code == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in err and f"{key} was" in lines[0], (key, err)
        assert _checkpoints(out) == kept  # a refused resume deletes nothing
        assert not out.exists()
    code, err = run_cli(_head(tiny_bert, other_data, eval_, out, "resume=true"))
    assert code == 2 and "data_sha256 was 'other examples'" in err
    assert _checkpoints(out) == kept
    # the same settings resume; the epoch-1 eval made before the interruption is kept
    loaded = _spy_on_load(monkeypatch)
    code, err = run_cli(_head(tiny_bert, train, eval_, out, "resume=true"))
    assert code == 0, err
    assert loaded == ["step-8"]
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log if "step" in row] == list(range(1, 17))
    assert [row["epoch_eval"]["epoch"] for row in log if "epoch_eval" in row] == [1]
    assert not out.with_name(".run.partial").exists()


def test_a_fresh_run_discards_an_interrupted_ones_checkpoints(run_cli, monkeypatch, tiny_bert, toy_data, tmp_path):
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        _interrupt_after_checkpoint(patch, 4)
        assert run_cli(_head(tiny_bert, *toy_data, out, "lr=0.5"))[0] == 130
    code, err = run_cli(_head(tiny_bert, *toy_data, out))  # resume=false: start over
    assert code == 0 and "starting over" in err
    assert json.loads((out / "record.json").read_text())["train_steps"] == 16


def test_checkpoint_shape_mismatch_is_one_line(tiny_bert, toy_data, tmp_path, run_cli, monkeypatch):
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        _interrupt_after_checkpoint(patch, 4)
        run_cli(_head(tiny_bert, *toy_data, out))
    step = latest_checkpoint(out.with_name(".run.partial") / "checkpoints")
    weights = load_file(step / "trainable.safetensors")
    name = next(iter(weights))
    weights[name] = torch.zeros(3, 1)
    save_file(weights, step / "trainable.safetensors")
    code, err = run_cli(_head(tiny_bert, *toy_data, out, "resume=true"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"{name} has shape (3, 1) there" in err and "Traceback" not in err
    (step / "trainable.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(LmadaptError, match="is unreadable"):
        load_checkpoint(step, torch.nn.Linear(1, 1), None, None)  # type: ignore[arg-type]


def test_resumed_compare_reruns_only_unfinished_methods(run_cli, monkeypatch, tiny_llama, tiny_bert, toy_data,
                                                        tmp_path):
    out = tmp_path / "cmp"
    args = ["compare", "--methods", f"zero-shot@{tiny_llama},head", "--model", tiny_bert, "--train", toy_data[0],
            "--eval", toy_data[1], "--out", out, "epochs=2", "batch_size=8", "save_every=3",
            "max_eval_examples=8"]
    with monkeypatch.context() as patch:
        # 54 training examples after the validation split: 6 steps per epoch; head is interrupted in epoch 2
        _interrupt_after_checkpoint(patch, 9)
        assert run_cli(args)[0] == 130
    partial = out.with_name(".cmp.partial")
    finished = json.loads((partial / "runs" / "zero-shot@llama0" / "record.json").read_text())
    # a changed setting: the whole compare is refused, nothing is lost
    code, err = run_cli([*args, "resume=true", "max_length=64"])
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "train.max_length was 256" in errors[0] and "Traceback" not in err
    assert (partial / "runs" / "zero-shot@llama0" / "record.json").is_file()
    fits, loaded = [], _spy_on_load(monkeypatch)
    monkeypatch.setattr(ZeroShot, "fit", lambda self, *a, **k: fits.append(1) or pytest.fail("re-ran zero-shot"))
    code, err = run_cli([*args, "resume=true"])
    assert code == 0, err
    assert not fits and loaded == ["step-9"]
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["method"] for r in results] == ["zero-shot", "head"]
    assert results[0]["created"] == finished["created"]  # reused, not re-run
    with sqlite3.connect(out / "runs.sqlite") as db:
        assert db.execute("SELECT method FROM runs ORDER BY id").fetchall() == [("zero-shot",), ("head",)]
    head_log = [json.loads(line) for line in (out / "runs" / "head" / "train_log.jsonl").read_text().splitlines()]
    # epoch 1's validation score, from before the interruption, survives; epoch 2's follows it
    assert [row["epoch_eval"]["epoch"] for row in head_log if "epoch_eval" in row] == [1, 2]


def test_first_difference_names_the_dotted_key():
    assert first_difference({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}}) == ("a.c", 2, 3)
    assert first_difference({"a": 1}, {"a": 1, "b": 2}) == ("b", None, 2)
    assert first_difference({"a": [1]}, {"a": [1]}) is None


def test_a_train_setting_added_later_resumes_at_its_default(tmp_path):
    """Settings saved before a train setting existed match while it stays at its default."""
    from dataclasses import asdict

    from lmadapt.errors import ResumeRefused
    from lmadapt.run import _refuse_changed
    from lmadapt.train.config import TrainConfig

    current = {"method": "head", "train": {k: v for k, v in asdict(TrainConfig()).items()
                                           if k not in ("resume", "save_every", "eval_batch_size")}}
    saved = json.loads(json.dumps(current))
    del saved["train"]["gradient_checkpointing"]
    _refuse_changed(tmp_path, saved, current, "checkpoints")  # no difference
    changed = {**current, "train": {**current["train"], "gradient_checkpointing": True}}
    with pytest.raises(ResumeRefused, match="train.gradient_checkpointing was False"):
        _refuse_changed(tmp_path, saved, changed, "checkpoints")
