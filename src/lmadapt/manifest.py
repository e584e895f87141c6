"""A run folder's `lmadapt.json` is data, not code: read it strictly, store paths resolved.

* Reading: every problem (not JSON, not an object, a missing or unknown section or key, a value
  of the wrong type) is one `LmadaptError` line naming the file and the key.
* Paths: a local path (a model folder, a reward-model run, a `file.py` of a `file.py:function`
  ref) is written absolute, or relative to the run folder when it lies inside it, so a run works
  from any working directory; pull names, hub ids and module names stay as they are. A relative
  path read back is looked up inside the run folder first.
* Nothing read from a manifest runs code: `trust_remote_code` and Python reward functions need a
  flag on the command line at load time (see `lmadapt.run.load_run`).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any

from lmadapt.errors import LmadaptError

# dataclass fields that hold a path (or a hub id / pull name) rather than text
PATH_META = "path"
# the top-level keys of a run folder's lmadapt.json (`settings`: what shaped it, for resume)
MANIFEST_KEYS = ("format", "method", "method_config", "model", "model_config", "train", "task", "settings")
# what identifies a model's architecture (config.json): a run's artifact fits only that shape
FINGERPRINT = ("model_type", "hidden_size", "d_model", "num_hidden_layers", "num_layers", "vocab_size")


@dataclasses.dataclass
class TaskMeta:
    """The task section of a manifest (`Task.meta()`)."""

    name: str = "task"
    kind: str = ""
    labels: tuple[str, ...] = ()
    template: str = "{text}"
    label_prefix: str = " "
    metric: str = ""  # older runs have none: the kind's default (eval/metrics.py)
    format: str = "text"
    chat_template: str = "auto"
    train_on: str = "all"
    stop: tuple[str, ...] = ()


def read_json_object(path: Path) -> dict:
    """The JSON object in path, or a one-line error naming the file and the problem."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise LmadaptError(f"{path}: not UTF-8 text (byte {err.start}); restore it from the run") from None
    except OSError as err:
        raise LmadaptError(f"{path}: cannot read it ({err.strerror or err})") from None
    try:
        data = json.loads(text)
    except ValueError as err:
        raise LmadaptError(f"{path}: not valid JSON ({err}); restore it or rerun the run") from None
    if not isinstance(data, dict):
        raise LmadaptError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def _is_local(ref: str) -> bool:
    return bool(ref) and Path(ref).expanduser().exists()


def store_path(ref: str, run_dir: Path | None = None) -> str:
    """How a path is written into a manifest: absolute, or relative to run_dir when inside it;
    `file.py:function` has its file part resolved; anything that is not an existing local path
    (a hub id, a pull name, `module:function`) is returned unchanged."""
    if not isinstance(ref, str) or not ref:
        return ref
    if not _is_local(ref):
        target, sep, name = ref.rpartition(":")
        if sep and target.endswith(".py") and _is_local(target):
            return f"{store_path(target, run_dir)}:{name}"
        return ref
    path = Path(ref).expanduser().resolve()
    if run_dir is not None:
        root = Path(run_dir).expanduser().resolve()
        if path == root or root in path.parents:
            return path.relative_to(root).as_posix() or "."
    return str(path)


def load_path(ref: str, run_dir: Path) -> str:
    """A path read from run_dir's manifest: a relative one that exists inside run_dir is taken
    from there (the run folder was moved with it); anything else is returned unchanged."""
    if not isinstance(ref, str) or not ref or Path(ref).is_absolute():
        return ref
    inside = Path(run_dir) / ref
    target, sep, name = ref.rpartition(":")
    if sep and target.endswith(".py") and not Path(target).is_absolute() and (Path(run_dir) / target).exists():
        return f"{Path(run_dir) / target}:{name}"
    return str(inside) if inside.exists() else ref


def path_fields(cls: type) -> list[str]:
    """Names of cls's fields marked as paths (`metadata={"path": True}`)."""
    return [f.name for f in dataclasses.fields(cls) if f.metadata.get(PATH_META)]


def _type_ok(value: Any, typ: Any) -> bool:
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, t) for t in typing.get_args(typ))
    if typ is type(None) or typ is None:
        return value is None
    if typ is Any:
        return True
    if typ is bool:
        return isinstance(value, bool)
    if typ is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if typ is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if typ is str:
        return isinstance(value, str)
    if origin in (tuple, list) or typ in (tuple, list):
        args = [a for a in typing.get_args(typ) if a is not Ellipsis]
        return isinstance(value, (list, tuple)) and all(_type_ok(v, args[0]) for v in value) if args else \
            isinstance(value, (list, tuple))
    if origin is dict or typ is dict:
        return isinstance(value, dict)
    return True


def _type_name(typ: Any) -> str:
    origin = typing.get_origin(typ)
    if origin in (tuple, list):
        args = [a for a in typing.get_args(typ) if a is not Ellipsis]
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(t) for t in typing.get_args(typ))
    if typ is type(None):
        return "null"
    return getattr(typ, "__name__", None) or str(typ).replace("typing.", "")


def section(manifest: dict, key: str, path: Path) -> Any:
    """manifest[key], or a one-line error naming the file and the missing section."""
    if key not in manifest:
        raise LmadaptError(f"{path}: missing section {key!r}; the run folder is incomplete or not from lmadapt")
    return manifest[key]


def build(cls: type, values: Any, where: str, path: Path, required: tuple[str, ...] = ()) -> Any:
    """An instance of dataclass cls from a manifest section; unknown keys, wrong types and invalid
    values are one line naming the file and the key (`where` is the section's name)."""
    if not isinstance(values, dict):
        raise LmadaptError(f"{path}: section {where!r} must be an object, found {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key, value in values.items():
        if key not in names:
            raise LmadaptError(f"{path}: unknown key {where}.{key}; known: {', '.join(names)}")
        if not _type_ok(value, hints[key]):
            raise LmadaptError(f"{path}: {where}.{key} = {value!r} is not a {_type_name(hints[key])}")
    for key in required:
        if not values.get(key):
            raise LmadaptError(f"{path}: {where}.{key} is missing or empty")
    kwargs = {k: tuple(v) if isinstance(v, list) and typing.get_origin(hints[k]) is tuple else v
              for k, v in values.items()}
    try:
        return cls(**kwargs)
    except LmadaptError as err:
        raise LmadaptError(f"{path}: {where}: {err}") from None
    except (TypeError, ValueError) as err:
        raise LmadaptError(f"{path}: {where}: {str(err).splitlines()[0][:200]}") from None


def model_fingerprint(ref: str, trust_remote_code: bool = False) -> dict:
    """The architecture fields of a model's config (FINGERPRINT); {} when it cannot be read."""
    from lmadapt.models.load import load_config, resolve_model_ref

    try:
        config = load_config(resolve_model_ref(ref), trust_remote_code).to_dict()
    except LmadaptError:
        return {}
    return {k: config[k] for k in FINGERPRINT if isinstance(config.get(k), (str, int))}


def check_fingerprint(saved: Any, ref: str, trust_remote_code: bool, path: Path) -> None:
    """One line when model `ref` is not the architecture the run was trained on (`saved`, the
    manifest's model_config); silent when either side is unknown."""
    if not saved:
        return
    if not isinstance(saved, dict):
        raise LmadaptError(f"{path}: section 'model_config' must be an object, found {type(saved).__name__}")
    now = model_fingerprint(ref, trust_remote_code)
    for key in FINGERPRINT:
        if key in saved and key in now and saved[key] != now[key]:
            raise LmadaptError(f"{path}: the run was trained on a model with {key}={saved[key]!r}, but model "
                               f"{ref!r} has {key}={now[key]!r}; point model.model at the model it was trained on")
