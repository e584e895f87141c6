from lmadapt.methods import lazy_exports
from lmadapt.methods.ia3.config import IA3MethodConfig

__getattr__ = lazy_exports(__name__, {"IA3": "method"})  # the class imports torch: on first use

__all__ = ["IA3", "IA3MethodConfig"]
