from lmadapt.methods import lazy_exports
from lmadapt.methods.ptuning.config import PtuningMethodConfig

__getattr__ = lazy_exports(__name__, {"Ptuning": "method"})  # the class imports torch: on first use

__all__ = ["Ptuning", "PtuningMethodConfig"]
