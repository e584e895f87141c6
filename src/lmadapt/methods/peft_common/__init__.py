"""Shared code of the peft-backed methods (lora, ia3, prefix, ptuning, prompt): build, save,
load, merge, and several adapters on one base model."""

from lmadapt.methods.peft_common.build import fit_peft, load_peft
from lmadapt.methods.peft_common.multi import AdapterSet

__all__ = ["AdapterSet", "fit_peft", "load_peft"]
