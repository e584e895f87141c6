"""Named, offline-capable pulls of models and datasets (`lmadapt pull model|data NAME`)."""

from lmadapt.assets.pull import (
    is_cached,
    lmadapt_home,
    pull_data,
    pull_model,
    resolve_data,
    resolve_model,
    verify,
)
from lmadapt.assets.registry import DATASETS, MODELS

__all__ = [
    "DATASETS",
    "MODELS",
    "is_cached",
    "lmadapt_home",
    "pull_data",
    "pull_model",
    "resolve_data",
    "resolve_model",
    "verify",
]
