from lmadapt.methods import lazy_exports
from lmadapt.methods.head.config import HeadConfig

__getattr__ = lazy_exports(__name__, {"Head": "method"})  # the class imports torch: on first use

__all__ = ["Head", "HeadConfig"]
