"""Tasks and their loaders."""

from lmadapt.data.loaders import DataSpec, load_task, load_train_eval, read_rows
from lmadapt.data.task import (
    KINDS,
    DataWarning,
    Example,
    PreferenceExample,
    Task,
    duplicate_count,
    overlap_count,
    split_task,
)

__all__ = ["DataSpec", "DataWarning", "Example", "KINDS", "PreferenceExample", "Task", "duplicate_count", "load_task",
           "load_train_eval", "overlap_count", "read_rows", "split_task"]
