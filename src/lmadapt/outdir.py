"""A user's disk: which output folders lmadapt may write, the lock held while it writes, and the
one way a finished folder replaces an old one.

Rules (docs/reliability.md):
- `--out` may be absent, an empty folder, or a folder lmadapt wrote (it holds the ownership list
  `.lmadapt-owned`, or a marker such as `lmadapt.json` / `results.jsonl`). Anything else is refused
  unless `overwrite=True`; even then a target that is or contains the working directory, the home
  folder or any input path is always refused.
- A write holds an exclusive OS lock (`filelock`) on the target, a lock file in the cache root
  keyed by its resolved path; a second writer fails at once with the holder's pid (or waits up to
  `timeout` seconds).
- Replacing an old folder keeps it until the new one is complete, then removes only the entries
  lmadapt wrote there; a user's other files in an `overwrite`n folder stay.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from lmadapt.errors import LmadaptError

OWNED = ".lmadapt-owned"  # JSON list of the top-level entries lmadapt wrote into a folder
MARKERS = ("lmadapt.json", "results.jsonl")  # run folder / compare folder
# What earlier versions wrote into run and compare folders (before the ownership list existed).
LEGACY_ENTRIES = frozenset({"lmadapt.json", "artifact", "record.json", "predictions.jsonl",
                            "train_log.jsonl", "runs.sqlite", "results.jsonl", "report.md",
                            "pareto.png", "runs", "checkpoints"})


def _resolve(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def _within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def owned_entries(folder: Path, markers: Iterable[str] = MARKERS) -> set[str] | None:
    """Names lmadapt wrote into folder; None when lmadapt did not write it."""
    listing = folder / OWNED
    if listing.is_file():
        try:
            names = json.loads(listing.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            names = None
        if isinstance(names, list) and all(isinstance(n, str) and "/" not in n and n not in ("", ".", "..")
                                           for n in names):
            return set(names) | {OWNED}
    if any((folder / m).exists() for m in markers):
        return {p.name for p in folder.iterdir() if p.name in LEGACY_ENTRIES or p.name in markers}
    return None


def input_paths(model_ref: str, method_cfg: Any, *tasks: Any) -> set[str]:
    """Paths a run reads: its tasks' data files (from each example's `file:line` source), a local
    model folder, and any existing path named in the method config (a second model, documents)."""
    refs = {ex.source.rsplit(":", 1)[0] for task in tasks for ex in task.examples if ex.source}
    refs.add(model_ref)
    if dataclasses.is_dataclass(method_cfg):  # a path, or the file of a `file.py:function` reference
        values = [v for v in dataclasses.asdict(method_cfg).values() if isinstance(v, str) and v]
        refs.update(values + [v.rsplit(":", 1)[0] for v in values if v.rsplit(":", 1)[0].endswith(".py")])
    return {ref for ref in refs if ref and Path(ref).exists()}


def check_out(out: str | Path, *, overwrite: bool = False, inputs: Iterable[str | Path] = (),
              markers: Iterable[str] = MARKERS, what: str = "--out") -> Path:
    """The resolved output folder, or a one-line LmadaptError saying why lmadapt may not write it."""
    given = str(out)
    if not given.strip():
        raise LmadaptError(f"{what} is empty; pass a folder name, e.g. {what} runs/my-run")
    target = _resolve(out)
    cwd, home = Path.cwd().resolve(), _resolve("~")
    if _within(cwd, target):
        raise LmadaptError(f"{what} {given} is the working directory or a folder above it; "
                           f"pass a new folder name, e.g. {what} runs/my-run")
    if _within(home, target):
        raise LmadaptError(f"{what} {given} is your home folder or a folder above it; pass a new folder name")
    for ref in inputs:
        if not ref:
            continue
        path = _resolve(ref)
        if path.exists() and _within(path, target):
            raise LmadaptError(f"{what} {given} holds the input {ref}; write the output somewhere else")
    if target.exists() and not target.is_dir():
        raise LmadaptError(f"{what} {given} is a file, not a folder; pass a folder name")
    if not target.exists() or overwrite:
        return target
    entries = sorted(p.name for p in target.iterdir())
    if entries and owned_entries(target, tuple(markers)) is None:
        raise LmadaptError(f"{what} {given} is a folder lmadapt did not write (it holds {entries[0]!r}); "
                           "pick a new folder, or pass --overwrite to replace lmadapt's output in it")
    return target


def lock_path(target: str | Path) -> Path:
    """The lock file of a target folder: in the cache root (`$LMADAPT_HOME/locks`), keyed by the
    target's resolved path, so a lock leaves nothing beside the user's folders."""
    from lmadapt.assets.cache import lmadapt_home

    key = hashlib.sha256(str(_resolve(target)).encode()).hexdigest()[:32]
    return lmadapt_home() / "locks" / f"{key}.lock"


@contextmanager
def locked(target: str | Path, timeout: float = 0) -> Iterator[None]:
    """Hold an exclusive OS lock (filelock) on target for the whole block.

    timeout 0 fails at once; > 0 waits up to that many seconds. The error names the holder's pid.
    """
    target = _resolve(target)
    path = lock_path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), timeout=timeout)
    try:
        lock.acquire()
    except Timeout:
        try:
            holder = path.read_text(encoding="utf-8").split("\n", 1)[0].strip() or "unknown"
        except OSError:
            holder = "unknown"
        waited = f" after waiting {timeout:g} s" if timeout > 0 else ""
        raise LmadaptError(f"{target} is being written by another lmadapt process (pid {holder}){waited}; "
                           "wait for it to finish or write somewhere else") from None
    try:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(f"{os.getpid()}\n{target}\n")
        yield
    finally:
        lock.release()


def claim(folder: Path, names: Iterable[str]) -> None:
    """Add names to folder's ownership list before they are written, so a folder that several
    processes fill in place (a fractions run's variants) is lmadapt's from its first moment."""
    with locked(folder, timeout=60):  # held only while the list is rewritten, not while the folder fills
        owned = owned_entries(folder, ()) or set()
        listing = sorted((owned | set(names)) - {OWNED})
        tmp = folder / f"{OWNED}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(listing), encoding="utf-8")
        os.replace(tmp, folder / OWNED)


def replace_folder(work: Path, final: Path, markers: Iterable[str] = MARKERS) -> None:
    """Move the finished folder `work` to `final`; what lmadapt wrote before at `final` goes,
    a user's other files there stay. The old output is removed only after the new one is in."""
    new_entries = sorted(p.name for p in work.iterdir() if p.name != OWNED)
    (work / OWNED).write_text(json.dumps(new_entries), encoding="utf-8")
    if not final.exists():
        os.replace(work, final)
        return
    old_owned = owned_entries(final, tuple(markers)) or set()
    present = {p.name for p in final.iterdir()}
    trash = final.with_name(f".{final.name}.old")
    shutil.rmtree(trash, ignore_errors=True)
    if present <= old_owned:  # nothing of the user's here: swap the whole folder in one rename
        os.replace(final, trash)
        os.replace(work, final)
    else:  # an --overwrite'n folder with the user's files: swap lmadapt's entries only
        trash.mkdir()
        for name in sorted((old_owned & present) | (set(new_entries) & present) | {OWNED} & present):
            os.replace(final / name, trash / name)
        for name in [*new_entries, OWNED]:
            os.replace(work / name, final / name)
        work.rmdir()
    shutil.rmtree(trash, ignore_errors=True)
