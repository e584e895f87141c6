"""Small helpers shared across the package."""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def partial_dir(final: Path) -> Path:
    """The working folder of a run whose results go to `final` (renamed into place at the end)."""
    final = Path(final)
    return final.with_name(f".{final.name}.partial")


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield the working folder of `final`; on success it replaces `final`.

    On a user error (LmadaptError) the working folder is removed, so bad input leaves no output.
    On any other interruption it is kept only if it holds checkpoints, for `resume=true`.
    """
    from lmadapt.errors import LmadaptError

    final = Path(final)
    work = partial_dir(final)
    work.mkdir(parents=True, exist_ok=True)
    try:
        yield work
    except BaseException as err:
        has_checkpoints = (work / "checkpoints").is_dir() and any((work / "checkpoints").iterdir())
        if isinstance(err, LmadaptError) or not has_checkpoints:
            shutil.rmtree(work, ignore_errors=True)
        raise
    shutil.rmtree(work / "checkpoints", ignore_errors=True)
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(work, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(work, final)


def dir_bytes(path: Path) -> int:
    """Total size of the files under path."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file through a temporary sibling and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
