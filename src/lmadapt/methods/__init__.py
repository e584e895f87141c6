"""The method registry: one line per method. See CONTRIBUTING.md to add one.

A line says where the method's class lives, where its settings dataclass lives (a module that
imports no torch) and, optionally, its own commands (`lmadapt NAME ...`, a torch-free typer app).
The classes, and torch and peft with them, are imported on first use of `REGISTRY` or
`get_method`; `method_names`, `config_class` and `command_groups` read only the light modules,
so `lmadapt --help` and the settings help stay fast.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from lmadapt.errors import LmadaptError

if TYPE_CHECKING:
    from lmadapt.methods.base import Method


class Line(NamedTuple):
    method: str  # "module:Class" under lmadapt.methods: the method class (imports torch)
    config: str  # "module:Class" of its settings dataclass (no torch)
    commands: str = ""  # "module:app": a typer app of its own commands, mounted as `lmadapt NAME`


LINES: dict[str, Line] = {
    "zero-shot": Line("zero_shot.method:ZeroShot", "zero_shot.config:ZeroShotConfig"),
    "icl": Line("icl.method:ICL", "icl.config:ICLConfig"),
    "rag": Line("rag.method:Rag", "rag.config:RagConfig"),
    "features": Line("features.method:Features", "features.config:FeaturesConfig"),
    "head": Line("head.method:Head", "head.config:HeadConfig"),
    "full": Line("full.method:Full", "full.config:FullConfig"),
    "lora": Line("lora.method:Lora", "lora.config:LoraMethodConfig"),
    "ia3": Line("ia3.method:IA3", "ia3.config:IA3MethodConfig"),
    "prefix": Line("prefix.method:Prefix", "prefix.config:PrefixMethodConfig"),
    "ptuning": Line("ptuning.method:Ptuning", "ptuning.config:PtuningMethodConfig"),
    "prompt": Line("prompt.method:Prompt", "prompt.config:PromptMethodConfig"),
    "adapter": Line("adapter.method:Adapter", "adapter.config:AdapterMethodConfig"),
    "unipelt": Line("unipelt.method:Unipelt", "unipelt.config:UnipeltMethodConfig"),
    "proxy": Line("proxy.method:Proxy", "proxy.config:ProxyConfig"),
    "reward": Line("rlhf.reward:Reward", "rlhf.config:RewardConfig"),
    "dpo": Line("rlhf.dpo:DPO", "rlhf.config:DPOConfig"),
    "rlhf": Line("rlhf.method:Rlhf", "rlhf.config:RlhfMethodConfig", "rlhf.cli:rlhf_app"),
    "distill": Line("distill.method:Distill", "distill.config:DistillConfig", "distill.cli:distill_app"),
}


def _load(place: str) -> Any:
    """'lora.method:Lora' → the class Lora of lmadapt.methods.lora.method."""
    module, _, attr = place.partition(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), attr)


def _build_registry() -> dict[str, type]:
    """Import every method class and check its declarations (a wrong one fails here)."""
    from lmadapt.methods.base import check_declaration

    registry: dict[str, type] = {}
    for name, line in LINES.items():
        cls = _load(line.method)
        check_declaration(cls)
        if cls.name != name:
            raise TypeError(f"registry name {name!r} differs from {cls.__name__}.name {cls.name!r}")
        if cls.config_class is not _load(line.config):
            raise TypeError(f"registry line {name!r}: {line.config} is not {cls.__name__}.config_class")
        registry[name] = cls
    return registry


_BASE_NAMES = ("Adapted", "Method", "RunContext")


def __getattr__(name: str) -> Any:
    """`REGISTRY` (name → method class, built once on first use) and the base classes, lazily."""
    if name == "REGISTRY":
        globals()["REGISTRY"] = registry = _build_registry()
        return registry
    if name in _BASE_NAMES:
        return getattr(importlib.import_module(f"{__name__}.base"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _loaded() -> dict[str, type] | None:
    """REGISTRY when it has been built (it is then the truth: tests register toy methods in it)."""
    return globals().get("REGISTRY")


def _registry() -> dict[str, type]:
    registry = _loaded()
    return registry if registry is not None else __getattr__("REGISTRY")


def get_method(name: str) -> Method:
    """An instance of the named method; one-line error listing the known names otherwise."""
    registry = _registry()
    if name not in registry:
        raise LmadaptError(f"unknown method {name!r}; known methods: {', '.join(registry)}")
    return registry[name]()


def method_names() -> list[str]:
    """The registered method names, in registry order, without importing any method."""
    registry = _loaded()
    return list(registry if registry is not None else LINES)


def config_class(name: str) -> type:
    """The named method's settings dataclass, importing only its (torch-free) config module."""
    registry = _loaded()
    if registry is not None and name in registry:
        return registry[name].config_class
    if name not in LINES:
        raise LmadaptError(f"unknown method {name!r}; known methods: {', '.join(method_names())}")
    return _load(LINES[name].config)


def command_groups() -> dict[str, Callable[[], Any]]:
    """Method name → a loader of its typer app (`lmadapt NAME ...`), for the methods that have one."""
    return {name: (lambda place=line.commands: _load(place)) for name, line in LINES.items() if line.commands}


def lazy_exports(package: str, places: dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` for a method package: `places` maps an exported name to the
    submodule defining it (`{"Lora": "method"}`), imported (with torch, peft) on first access,
    so importing the package's config module stays light."""
    def __getattr__(name: str) -> Any:
        if name not in places:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{places[name]}"), name)

    return __getattr__


# run folders of older lmadapt versions, written under names that are no methods now
RETIRED = {"rlhf-reward": ("lmadapt rlhf reward", "reward"), "rlhf-dpo": ("lmadapt rlhf dpo", "dpo"),
           "rlhf-ppo": ("lmadapt rlhf ppo", "rlhf")}


def retired_note(name: str) -> str | None:
    """What to do with a run folder an older lmadapt wrote under the retired method `name`."""
    if name not in RETIRED:
        return None
    command, method = RETIRED[name]
    return (f"holds an `{command}` run, not a tune run: an older lmadapt wrote it; re-run `{command}` "
            f"(or `lmadapt tune --method {method}`) to get a run folder that eval, predict and compare open")


def task_readers(names: list[str]) -> list:
    """The `load_task` readers (data layouts of their own) of the named methods, in order."""
    readers = []
    for name in dict.fromkeys(names):
        reader = get_method(name).load_task
        if reader is not None and reader not in readers:
            readers.append(reader)
    return readers


__all__ = ["Adapted", "Method", "REGISTRY", "RunContext", "command_groups", "config_class", "get_method",
           "lazy_exports", "method_names", "retired_note", "task_readers"]
