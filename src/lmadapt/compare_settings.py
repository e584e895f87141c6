"""The settings of a compare (search, seeds, tests, budgets), apart from `compare.py` so that the
CLI's help reads them without importing torch."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from lmadapt.config import build_configs
from lmadapt.errors import LmadaptError


@dataclass(frozen=True)
class CompareConfig:
    """How a compare selects, repeats and recommends (train and method settings are separate)."""

    search_trials: int = field(default=0, metadata={
        "help": "Optuna trials per trainable method (learning rate in the method's range, plus search_space keys), "
                "scored on the validation set; 0 = the methods' defaults"})
    search_space: str = field(default="", metadata={
        "help": "YAML file (or inline mapping) of extra keys to search: key: a list of choices, or key: {low, high, log}"})
    search_storage: str = field(default="", metadata={
        "help": "Optuna storage URL (default: SQLite in the compare folder); machines running the same command "
                "on one URL share the studies"})
    seeds: int = field(default=1, metadata={"help": "retrain each selected configuration with N seeds"})
    alpha: float = field(default=0.05, metadata={"help": "significance level of the paired tests (Holm-corrected)"})
    budget_params: float = field(default=0, metadata={"help": "recommend within at most N trainable parameters (0 = no budget)"})
    budget_train_s: float = field(default=0, metadata={"help": "recommend within at most N seconds of training (0 = no budget)"})
    budget_memory: str = field(default="", metadata={"help": "recommend within this peak memory, e.g. 8GB (empty = no budget)"})
    budget_latency_ms: float = field(default=0, metadata={"help": "recommend within N ms per eval example (0 = no budget)"})

    def __post_init__(self) -> None:
        from lmadapt.report.recommend import parse_bytes

        if self.search_trials < 0 or self.seeds < 1:
            raise LmadaptError(f"search_trials must be >= 0 and seeds >= 1, got {self.search_trials} and {self.seeds}")
        if not 0 < self.alpha < 1:
            raise LmadaptError(f"alpha must be in (0, 1), got {self.alpha}")
        if min(self.budget_params, self.budget_train_s, self.budget_latency_ms) < 0:
            raise LmadaptError("budgets must be >= 0 (0 = no budget)")
        parse_bytes(self.budget_memory)


COMPARE_KEYS = frozenset(f.name for f in dataclasses.fields(CompareConfig))


def compare_config(values: dict[str, Any]) -> CompareConfig:
    """The compare settings among `values` (the others are train and method settings)."""
    return build_configs([CompareConfig], {k: v for k, v in values.items() if k in COMPARE_KEYS})[CompareConfig]
