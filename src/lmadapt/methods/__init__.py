"""The method registry: one line per method. See CONTRIBUTING.md to add one."""

from __future__ import annotations

from lmadapt.errors import LmadaptError
from lmadapt.methods.adapter import Adapter
from lmadapt.methods.base import Adapted, Method, RunContext, check_declaration
from lmadapt.methods.distill import Distill
from lmadapt.methods.features import Features
from lmadapt.methods.full import Full
from lmadapt.methods.head import Head
from lmadapt.methods.ia3 import IA3
from lmadapt.methods.icl import ICL
from lmadapt.methods.lora import Lora
from lmadapt.methods.prefix import Prefix
from lmadapt.methods.prompt import Prompt
from lmadapt.methods.proxy import Proxy
from lmadapt.methods.ptuning import Ptuning
from lmadapt.methods.rag import Rag
from lmadapt.methods.rlhf.dpo import DPO
from lmadapt.methods.rlhf.method import Rlhf
from lmadapt.methods.rlhf.reward import Reward
from lmadapt.methods.unipelt import Unipelt
from lmadapt.methods.zero_shot import ZeroShot

REGISTRY: dict[str, type] = {
    "zero-shot": ZeroShot,
    "icl": ICL,
    "rag": Rag,
    "features": Features,
    "head": Head,
    "full": Full,
    "lora": Lora,
    "ia3": IA3,
    "prefix": Prefix,
    "ptuning": Ptuning,
    "prompt": Prompt,
    "adapter": Adapter,
    "unipelt": Unipelt,
    "proxy": Proxy,
    "reward": Reward,
    "dpo": DPO,
    "rlhf": Rlhf,
    "distill": Distill,
}


for _name, _cls in REGISTRY.items():
    check_declaration(_cls)
    if _cls.name != _name:
        raise TypeError(f"registry name {_name!r} differs from {_cls.__name__}.name {_cls.name!r}")


def get_method(name: str) -> Method:
    """An instance of the named method; one-line error listing the known names otherwise."""
    if name not in REGISTRY:
        raise LmadaptError(f"unknown method {name!r}; known methods: {', '.join(REGISTRY)}")
    return REGISTRY[name]()


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


__all__ = ["Adapted", "Method", "REGISTRY", "RunContext", "get_method", "retired_note", "task_readers"]
