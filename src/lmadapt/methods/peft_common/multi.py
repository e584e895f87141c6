"""Several PEFT adapters on one base model: load by name, switch, disable.

    from lmadapt.methods.peft_common import AdapterSet
    adapters = AdapterSet(base_model, {"sst2": "runs/lora-sst2/artifact/adapter",
                                       "tweets": "runs/lora-tweets/artifact/adapter"})
    adapters.use("tweets"); logits = adapters.model(**batch).logits
    with adapters.disabled(): base_logits = adapters.model(**batch).logits
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch
from peft import PeftModel

from lmadapt.errors import LmadaptError


class AdapterSet:
    """A PeftModel holding named adapters over one shared (frozen) base model."""

    def __init__(self, base_model: torch.nn.Module, folders: dict[str, str | Path]) -> None:
        if not folders:
            raise LmadaptError("AdapterSet needs at least one adapter folder")
        (first, path), *rest = folders.items()
        self.model: PeftModel = PeftModel.from_pretrained(base_model, str(path), adapter_name=first)
        for name, folder in rest:
            self.add(name, folder)
        self.use(first)

    @property
    def names(self) -> list[str]:
        return list(self.model.peft_config)

    def add(self, name: str, folder: str | Path) -> None:
        """Load another PEFT folder (made on the same base model) under name."""
        if name in self.model.peft_config:
            raise LmadaptError(f"an adapter named {name!r} is already loaded")
        self.model.load_adapter(str(folder), adapter_name=name)

    def use(self, name: str) -> None:
        """Make name the active adapter."""
        if name not in self.model.peft_config:
            raise LmadaptError(f"no adapter named {name!r}; loaded: {', '.join(self.names)}")
        self.model.set_adapter(name)
        self.model.eval()

    @contextlib.contextmanager
    def disabled(self) -> Iterator[PeftModel]:
        """Run the bare base model inside this block (no adapter active)."""
        with self.model.disable_adapter():
            yield self.model
