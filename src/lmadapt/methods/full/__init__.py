from lmadapt.methods import lazy_exports
from lmadapt.methods.full.config import FullConfig

__getattr__ = lazy_exports(__name__, {"Full": "method"})  # the class imports torch: on first use

__all__ = ["Full", "FullConfig"]
