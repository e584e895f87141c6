"""Predictions written as they finish, so an interrupted eval continues (`resume=true`).

`run.tune` opens a `PredictionLog` on `predictions.partial.jsonl` in the run's working folder and
activates it around the final eval (`recording`); `TaskModel.generate` appends each finished
batch to the active log and skips the prompts it already holds. The file:

    {"settings": {...}}                                  what the predictions were made under
    {"call": 0, "prompt_sha256": "...", "prediction": "..."}   one line per finished prompt

`call` counts the generation calls of one eval (a method may generate more than once), so a
prompt is only reused by the call that made it. The working folder is kept on interruption
while the file holds a prediction (`utils.atomic_dir`), and removed when the run finishes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

PARTIAL = "predictions.partial.jsonl"


def prompt_key(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


def _lines(path: Path) -> Iterator[dict]:
    """The file's JSON objects; a line cut short by an interruption is skipped."""
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                yield row


def saved_settings(path: Path) -> dict | None:
    """The settings in the header of a log file (None when it has none)."""
    first = next(_lines(path), None) if path.is_file() else None
    settings = first.get("settings") if first else None
    return settings if isinstance(settings, dict) else None


def logged_predictions(path: Path) -> dict[tuple[int, str], str]:
    """(call, prompt_sha256) → prediction for every finished prompt in a log file."""
    return {(int(row["call"]), str(row["prompt_sha256"])): str(row["prediction"])
            for row in _lines(path) if "prediction" in row}


def has_predictions(path: Path) -> bool:
    """Whether a log file holds at least one finished prediction (not only its header)."""
    if not path.is_file():
        return False
    return any("prediction" in row for row in _lines(path))


class PredictionLog:
    """An append-only record of finished predictions (see the module docstring)."""

    def __init__(self, path: Path, settings: dict[str, Any]):
        self.path = Path(path)
        self.settings = json.loads(json.dumps(settings))
        self.reused = 0  # predictions taken from the file instead of generated
        self._done: dict[tuple[int, str], str] = {}
        self._calls = 0

    def start(self, resume: bool) -> None:
        """Keep the predictions already in the file (resume, settings checked by the caller), or
        start the file afresh with this log's settings."""
        if resume and has_predictions(self.path):
            self._done.update(logged_predictions(self.path))
            return
        self._done.clear()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({"settings": self.settings}) + "\n", encoding="utf-8")

    def next_call(self) -> int:
        """The number of the generation call starting now (0, 1, ...)."""
        self._calls += 1
        return self._calls - 1

    def done(self, call: int, prompts: list[str]) -> dict[int, str]:
        """Index → prediction for the prompts of this call already in the log."""
        found = {}
        for i, prompt in enumerate(prompts):
            if (hit := self._done.get((call, prompt_key(prompt)))) is not None:
                found[i] = hit
        self.reused += len(found)
        return found

    def append(self, call: int, pairs: list[tuple[str, str]]) -> None:
        """Add finished (prompt, prediction) pairs; on disk (flushed and synced) on return."""
        lines = []
        for prompt, prediction in pairs:
            key = prompt_key(prompt)
            self._done[(call, key)] = prediction
            lines.append(json.dumps({"call": call, "prompt_sha256": key, "prediction": prediction},
                                    ensure_ascii=False) + "\n")
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write("".join(lines))
            handle.flush()
            os.fsync(handle.fileno())

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


_ACTIVE: ContextVar[PredictionLog | None] = ContextVar("lmadapt_prediction_log", default=None)


def active_log() -> PredictionLog | None:
    """The log predictions are written to now (None outside `recording`)."""
    return _ACTIVE.get()


@contextmanager
def recording(log: PredictionLog | None) -> Iterator[PredictionLog | None]:
    """Make `log` the active prediction log inside the block (None: no log)."""
    token = _ACTIVE.set(log)
    try:
        yield log
    finally:
        _ACTIVE.reset(token)
