"""Configs from YAML files and `key=value` overrides, checked against the dataclasses.

The CLI, YAML files and the Python API share the same dataclasses (TrainConfig, ModelSpec and
each method's config); a key names a field of one of them.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from lmadapt.errors import LmadaptError


def field_type(cls: type, name: str) -> Any:
    hints = typing.get_type_hints(cls)
    return hints[name]


def parse_value(raw: Any, typ: Any, key: str) -> Any:
    """Convert a YAML value or a CLI string to the field's type."""
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        inner = [t for t in typing.get_args(typ) if t is not type(None)]
        if raw is None or (isinstance(raw, str) and raw.lower() in ("none", "null", "")):
            return None
        return parse_value(raw, inner[0], key)
    try:
        if typ is bool:
            if isinstance(raw, bool):
                return raw
            if str(raw).lower() in ("1", "true", "yes", "on"):
                return True
            if str(raw).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if typ in (int, float):
            return typ(raw) if not (typ is int and isinstance(raw, float) and not raw.is_integer()) else _bad()
        if origin is tuple or typ is tuple:
            items = raw if isinstance(raw, (list, tuple)) else [s for s in str(raw).split(",") if s]
            return tuple(str(i) for i in items)
        return str(raw) if typ is str else raw
    except (TypeError, ValueError):
        raise LmadaptError(f"{key}={raw!r} is not a valid {getattr(typ, '__name__', typ)}") from None


def _bad() -> None:
    raise ValueError


def config_keys(configs: list[type]) -> dict[str, type]:
    """Field name → the dataclass that owns it."""
    owners: dict[str, type] = {}
    for cls in configs:
        for f in dataclasses.fields(cls):
            owners.setdefault(f.name, cls)
    return owners


def build_configs(classes: list[type], values: dict[str, Any], strict: bool = True,
                  base: dict[type, Any] | None = None) -> dict[type, Any]:
    """Instantiate each class from the values whose keys are its fields (validation runs)."""
    owners = config_keys(classes)
    if strict:
        unknown = [k for k in values if k not in owners]
        if unknown:
            raise LmadaptError(f"unknown setting {unknown[0]!r}; known: {', '.join(sorted(owners))}")
    out = {}
    for cls in classes:
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: parse_value(v, field_type(cls, k), k) for k, v in values.items() if k in names}
        start = base.get(cls) if base else None
        out[cls] = dataclasses.replace(start, **kwargs) if start is not None else cls(**kwargs)
    return out


def parse_overrides(items: list[str]) -> dict[str, str]:
    """['lr=1e-4', 'epochs=2'] → {'lr': '1e-4', 'epochs': '2'}."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise LmadaptError(f"expected key=value, got {item!r}")
        out[key.strip().replace("-", "_")] = value
    return out


def load_yaml(path: Path | None) -> dict[str, Any]:
    """A flat mapping of settings; nested sections (train:, model:, method:) are flattened."""
    if path is None:
        return {}
    if not Path(path).exists():
        raise LmadaptError(f"config file {path} does not exist")
    if Path(path).is_dir():
        raise LmadaptError(f"config file {path} is a folder; pass a YAML file, e.g. --config {path}/tune.yaml")
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as err:
        raise LmadaptError(f"{path}: not valid UTF-8 (byte offset {err.start}); save it as UTF-8 YAML") from None
    except OSError as err:
        raise LmadaptError(f"config file {path} cannot be read ({err.strerror})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        why = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise LmadaptError(f"{where}: invalid YAML ({why})") from None
    if not isinstance(data, dict):
        raise LmadaptError(f"{path}: expected a mapping of settings at the top level")
    flat: dict[str, Any] = {}
    for key, value in data.items():
        bad = [k for k in (value if isinstance(value, dict) else {key: 0}) if not isinstance(k, str)]
        if not isinstance(key, str) or bad:
            raise LmadaptError(f"{path}: setting name {(bad or [key])[0]!r} is not a word; use key: value")
        if isinstance(value, dict):
            flat.update({k.replace("-", "_"): v for k, v in value.items()})
        else:
            flat[key.replace("-", "_")] = value
    return flat


def describe(classes: list[type]) -> str:
    """Help text listing every key=value setting with its default."""
    lines = []
    for cls in classes:
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else ""
            lines.append(f"  {f.name}={default!s:<10} {f.metadata.get('help', '')}")
    return "\n".join(lines)
