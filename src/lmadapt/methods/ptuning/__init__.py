from lmadapt.methods.ptuning.config import PtuningMethodConfig
from lmadapt.methods.ptuning.method import Ptuning

__all__ = ["Ptuning", "PtuningMethodConfig"]
