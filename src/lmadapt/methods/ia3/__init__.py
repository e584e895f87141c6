from lmadapt.methods.ia3.config import IA3MethodConfig
from lmadapt.methods.ia3.method import IA3

__all__ = ["IA3", "IA3MethodConfig"]
