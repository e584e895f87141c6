"""The pull cache on disk: where each model and dataset lives, its manifest (source, sha256 and
size of every file), and the checks that an entry is complete (`is_cached`, sizes) or intact
(`verify`, hashes). `assets/pull.py` fills it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path

from rich.console import Console

from lmadapt.assets.registry import DATASETS, MODELS, GeneratedDataset
from lmadapt.errors import LmadaptError

MANIFEST = "manifest.json"


def lmadapt_home() -> Path:
    """The cache root: `$LMADAPT_HOME` if set, else `~/.cache/lmadapt`."""
    configured = os.environ.get("LMADAPT_HOME", "").strip()
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "lmadapt"


def model_dir(name: str) -> Path:
    """Where the pulled model `name` lives (whether or not it is pulled yet)."""
    return lmadapt_home() / "models" / name


def data_path(name: str, split: str | None = None) -> Path:
    """Where the pulled dataset `name` (its `split`, for a generated one: by default the one
    `--train NAME` means) lives as JSONL, whether or not it is pulled yet."""
    asset = DATASETS.get(name)
    if isinstance(asset, GeneratedDataset):
        return lmadapt_home() / "data" / name / f"{split or asset.default_split}.jsonl"
    return lmadapt_home() / "data" / f"{name}.jsonl"


def _data_manifest(name: str) -> Path:
    return lmadapt_home() / "data" / f"{name}.manifest.json"


def _console() -> Console:
    return Console(stderr=True)


# ---------------------------------------------------------------------------------------
# Manifests and hashes
# ---------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(8 * 1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


def _file_records(root: Path, files: Iterable[Path]) -> dict[str, dict]:
    """{relative path: {"sha256", "bytes"}} for `files` under `root`, in sorted order."""
    return {
        path.relative_to(root).as_posix(): {"sha256": _sha256(path), "bytes": path.stat().st_size}
        for path in sorted(files)
    }


def _write_manifest(path: Path, name: str, kind: str, source: dict, files: dict, **extra) -> None:
    manifest = {
        "name": name,
        "kind": kind,
        "source": source,
        "files": files,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **extra,
    }
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def _read_manifest(path: Path) -> dict | None:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return (
        manifest if isinstance(manifest, dict) and isinstance(manifest.get("files"), dict) else None
    )


def _is_complete(manifest_path: Path, root: Path) -> bool:
    """Cheap check (no hashing): the manifest exists and lists files present at their sizes."""
    manifest = _read_manifest(manifest_path)
    if manifest is None or not manifest["files"]:
        return False
    for relative, record in manifest["files"].items():
        path = root / relative
        if not path.is_file() or path.stat().st_size != record.get("bytes"):
            return False
    return True


def _entry(name: str) -> tuple[Path, Path]:
    """(manifest path, root its file paths are relative to) for a known asset name."""
    if name in MODELS:
        return model_dir(name) / MANIFEST, model_dir(name)
    if isinstance(DATASETS.get(name), GeneratedDataset):
        return data_path(name).parent / MANIFEST, data_path(name).parent
    if name in DATASETS:
        return _data_manifest(name), data_path(name).parent
    raise _unknown(name, "asset")


def is_cached(name: str) -> bool:
    """True when the model or dataset `name` is pulled and complete (sizes, not hashes)."""
    return _is_complete(*_entry(name))


def verify(name: str) -> Path:
    """Recompute the sha256 of every file of the pulled asset `name`; return its path.

    Raises LmadaptError when it is not pulled or a file is missing or changed.
    """
    manifest_path, root = _entry(name)
    manifest = _read_manifest(manifest_path)
    kind = "model" if name in MODELS else "data"
    if manifest is None:
        raise LmadaptError(f"'{name}' is not pulled; run: lmadapt pull {kind} {name}")
    with _console().status(f"verifying {name}"):
        for relative, record in manifest["files"].items():
            path = root / relative
            if not path.is_file() or _sha256(path) != record.get("sha256"):
                raise LmadaptError(
                    f"'{name}' is damaged ({relative} is missing or changed); "
                    f"re-pull it: lmadapt pull {kind} {name} --force"
                )
    if isinstance(DATASETS.get(name), GeneratedDataset):
        return root
    return model_dir(name) if name in MODELS else data_path(name)


def _unknown(name: str, kind: str) -> LmadaptError:
    known = {"model": MODELS, "dataset": DATASETS, "asset": {**MODELS, **DATASETS}}[kind]
    return LmadaptError(f"unknown {kind} '{name}'; known: {', '.join(sorted(known))}")
