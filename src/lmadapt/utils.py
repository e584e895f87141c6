"""Small helpers shared across the package."""

from __future__ import annotations

import os
import random
import shutil
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import torch

from lmadapt.eval.prediction_log import PARTIAL, has_predictions
from lmadapt.outdir import MARKERS, check_out, locked, replace_folder


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def partial_dir(final: Path) -> Path:
    """The working folder of a run whose results go to `final` (renamed into place at the end)."""
    final = Path(final)
    return final.with_name(f".{final.name}.partial")


def _resumable(work: Path) -> bool:
    """Whether a working folder holds finished work a `resume=true` run continues from:
    training checkpoints, predictions of an interrupted eval, or (a compare) finished method runs
    and search trials."""
    checkpoints = work / "checkpoints"
    if checkpoints.is_dir() and any(checkpoints.glob("step-*")):
        return True
    if has_predictions(work / PARTIAL):
        return True
    if (work / "search.sqlite").is_file():  # a compare's search study: its finished trials
        return True
    runs = work / "runs"
    return runs.is_dir() and any(_run_worth_keeping(run) for run in runs.iterdir() if run.is_dir())


def _run_worth_keeping(run: Path) -> bool:
    """A finished run, a resumable one, or (a compare's seeds) a folder of such runs."""
    return ((run / "record.json").is_file() or _resumable(run)
            or any(_run_worth_keeping(seed) for seed in run.glob("*seed-*") if seed.is_dir()))


@contextmanager
def atomic_dir(final: Path, *, overwrite: bool = False, inputs: Iterable[str | Path] = (),
               markers: Iterable[str] = MARKERS, lock: bool = True, resume: bool = False) -> Iterator[Path]:
    """Yield the working folder of `final`; on success it replaces what lmadapt wrote at `final`.

    `final` is checked first (lmadapt.outdir.check_out: absent, empty, lmadapt's own, or
    `overwrite`; never the working directory, home or a folder holding an input) and locked for
    the whole write (`lock=False` only for a folder inside one already locked).
    On failure the working folder is removed, unless it holds checkpoints, eval predictions
    (`predictions.partial.jsonl`) or finished runs,
    which a `resume=true` run continues from (so a refused resume never deletes them). Without
    `resume`, an interrupted run's working folder is cleared first and the run starts over.
    """
    final = check_out(final, overwrite=overwrite, inputs=inputs, markers=markers) if lock else Path(final)
    with locked(final) if lock else nullcontext():
        if lock:  # the folder may have changed while another writer held the lock
            check_out(final, overwrite=overwrite, inputs=inputs, markers=markers)
        work = partial_dir(final)
        if not resume and work.exists():
            if _resumable(work):
                print(f"note: starting over; an interrupted run's checkpoints or predictions in {work} are discarded "
                      "(resume=true continues it)", file=sys.stderr)
            shutil.rmtree(work)
        work.mkdir(parents=True, exist_ok=True)
        try:
            yield work
        except BaseException:
            if not _resumable(work):
                shutil.rmtree(work, ignore_errors=True)
            raise
        shutil.rmtree(work / "checkpoints", ignore_errors=True)
        replace_folder(work, final, markers)


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
