"""RunRecord: one run's quality and cost, as record.json and a row of the SQLite store."""

from __future__ import annotations

import json
import platform
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from lmadapt.utils import atomic_write_text


@dataclass
class RunRecord:
    method: str
    model: str
    task: str
    metric: str
    score: float
    ci_low: float
    ci_high: float
    trainable_params: int
    total_params: int
    peak_memory_bytes: int
    train_seconds: float
    eval_examples_per_second: float
    artifact_bytes: int
    seed: int
    versions: dict = field(default_factory=dict)
    macro_f1: float | None = None
    train_examples: int = 0
    eval_examples: int = 0
    train_steps: int = 0
    train_tokens_per_second: float = 0.0
    eval_latency_ms: float = 0.0  # mean wall time per eval example
    final_loss: float | None = None
    hardware: str = ""
    created: str = ""
    config: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # method-specific figures (e.g. retrieval recall)
    # how the run's choices were made: "validation (n=60)", or "none: defaults" (nothing selected)
    selection: str = ""
    val_examples: int = 0
    val_score: float | None = None  # the selected configuration's validation score
    selected: dict = field(default_factory=dict)  # hyperparameters a search chose (key -> value)
    search_trials: int = 0  # finished search trials behind `selected`
    best_epoch: int | None = None  # early stopping: the epoch whose weights were kept
    # compare: several seeds of one configuration (score is their mean; the CI resamples both)
    seed_scores: list = field(default_factory=list)
    score_sd: float | None = None
    # compare: paired against the best method on the same eval examples (p Holm-corrected)
    diff_vs_best: float | None = None
    diff_ci_low: float | None = None
    diff_ci_high: float | None = None
    p_vs_best: float | None = None
    tied_best: bool | None = None
    label: str = ""  # compare: the method's label (METHOD or METHOD@MODEL)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> RunRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def write(self, path: Path) -> None:
        atomic_write_text(path, self.to_json() + "\n")


def versions() -> dict[str, str]:
    import accelerate
    import peft
    import transformers

    import lmadapt

    return {"lmadapt": lmadapt.__version__, "torch": torch.__version__,
            "transformers": transformers.__version__, "peft": peft.__version__,
            "accelerate": accelerate.__version__, "python": platform.python_version()}


def hardware() -> str:
    if torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name(0)}"
    import os

    return f"cpu:{platform.machine()}x{os.cpu_count()}"


class PeakMemory:
    """Peak memory during a block: CUDA max-allocated, else the process's resident set (sampled)."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def _rss() -> int:
        try:
            with open("/proc/self/statm") as handle:
                import os

                return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval)

    def __enter__(self) -> PeakMemory:
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        else:
            self.peak = self._rss()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if torch.cuda.is_available():
            self.peak = int(torch.cuda.max_memory_allocated())
        else:
            self._stop.set()
            if self._thread:
                self._thread.join()
            self.peak = max(self.peak, self._rss())


class RunStore:
    """Runs kept in an SQLite file: one row per run with the main columns + the full JSON."""

    COLUMNS = ("method", "model", "task", "metric", "score", "ci_low", "ci_high", "trainable_params",
               "total_params", "peak_memory_bytes", "train_seconds", "eval_examples_per_second",
               "artifact_bytes", "seed")

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        with self._connect() as db:
            cols = ", ".join(f"{c} {'TEXT' if c in ('method', 'model', 'task', 'metric') else 'REAL'}"
                             for c in self.COLUMNS)
            db.execute(f"CREATE TABLE IF NOT EXISTS runs (id INTEGER PRIMARY KEY, created TEXT, {cols}, record TEXT)")

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return sqlite3.connect(self.path)

    def add(self, record: RunRecord) -> None:
        """Store record once: adding the same record again (a resumed compare) is a no-op."""
        values = [getattr(record, c) for c in self.COLUMNS]
        marks = ", ".join("?" * (len(values) + 2))
        text = record.to_json()
        with self._connect() as db:
            db.execute(f"INSERT INTO runs (created, {', '.join(self.COLUMNS)}, record) SELECT {marks} "
                       "WHERE NOT EXISTS (SELECT 1 FROM runs WHERE record = ?)",
                       [record.created, *values, text, text])

    def all(self) -> list[RunRecord]:
        with self._connect() as db:
            rows = db.execute("SELECT record FROM runs ORDER BY id").fetchall()
        return [RunRecord.from_dict(json.loads(r[0])) for r in rows]
