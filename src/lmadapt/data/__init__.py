"""Tasks and their loaders."""

from lmadapt.data.loaders import DataSpec, load_task, load_train_eval, read_rows
from lmadapt.data.task import KINDS, Example, Task, split_task

__all__ = ["DataSpec", "Example", "KINDS", "Task", "load_task", "load_train_eval", "read_rows", "split_task"]
