"""What a frozen model computes from a run's training inputs, computed once per process.

A compare runs each method several times (search trials, seeds) on the same examples; methods
that read a frozen model (features' embeddings, head's frozen body) would compute the same
tensors in every run. Here they are kept in memory, keyed by

    (what was computed, the model's weights fingerprint, max_length, a digest of the inputs)

so a second run on the same model, texts and length gets them back, and another model, a model
re-saved at the same path, another dtype or device, other texts or another length never does.
The cache is bounded: least recently used entries go first once the total passes
`LMADAPT_FEATURE_CACHE_MB` (default 1024; 0 turns it off). Entries are read-only arrays.

An entry also keeps what computing it took (`seconds`): a run that uses a cached entry is
charged that time, so its recorded training time is that of the method run alone.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmadapt.models.load import ModelSpec, resolve_model_ref

DEFAULT_MB = 1024


@dataclass(frozen=True)
class Computed:
    """Arrays a frozen model computed (read-only) and the seconds that took."""

    arrays: dict[str, np.ndarray]
    seconds: float

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())


class FeatureCache:
    """A least-recently-used map from keys to `Computed`, bounded by total bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.entries: OrderedDict[tuple, Computed] = OrderedDict()
        self.hits = self.misses = 0

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self.entries.values())

    def get_or_compute(self, key: tuple | None, compute: Callable[[], dict[str, np.ndarray]]) -> Computed:
        """The entry under key, else compute() (timed), stored unless key is None or it does not
        fit in the bound."""
        if key is not None and key in self.entries:
            self.hits += 1
            self.entries.move_to_end(key)
            return self.entries[key]
        self.misses += 1
        began = time.perf_counter()
        arrays = compute()
        for array in arrays.values():
            array.flags.writeable = False  # shared by every run that gets it
        entry = Computed(arrays, time.perf_counter() - began)
        if key is not None and entry.nbytes <= self.max_bytes:
            self.entries[key] = entry
            while self.nbytes > self.max_bytes:
                self.entries.popitem(last=False)
        return entry

    def clear(self) -> None:
        self.entries.clear()
        self.hits = self.misses = 0


def _max_bytes() -> int:
    try:
        return int(float(os.environ.get("LMADAPT_FEATURE_CACHE_MB", DEFAULT_MB)) * 2**20)
    except ValueError:
        return DEFAULT_MB * 2**20


FEATURES = FeatureCache(_max_bytes())  # the process's cache


def weights_fingerprint(spec: ModelSpec) -> str | None:
    """A digest of which weights `spec` loads and how: every file of the model folder by name,
    size and modification time, plus dtype, device and trust_remote_code. None (do not cache)
    when the files cannot be found (a hub id not in the local HF cache)."""
    folder = Path(resolve_model_ref(spec.model))
    if not folder.is_dir():
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return None
        found = try_to_load_from_cache(str(spec.model), "config.json")
        if not isinstance(found, str):
            return None
        folder = Path(found).parent  # the snapshot folder of the cached revision
    digest = hashlib.sha256(f"{spec.dtype}|{spec.torch_device()}|{spec.trust_remote_code}".encode())
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"\n{path.relative_to(folder)}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return f"{folder.resolve()}#{digest.hexdigest()[:20]}"


def inputs_digest(items: Iterable[str | bytes]) -> str:
    """A digest of a sequence of inputs (order and boundaries included)."""
    digest = hashlib.sha256()
    for item in items:
        data = item.encode("utf-8") if isinstance(item, str) else item
        digest.update(len(data).to_bytes(8, "little") + data)
    return digest.hexdigest()
