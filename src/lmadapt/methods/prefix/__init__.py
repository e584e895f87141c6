from lmadapt.methods import lazy_exports
from lmadapt.methods.prefix.config import PrefixMethodConfig

__getattr__ = lazy_exports(__name__, {"Prefix": "method"})  # the class imports torch: on first use

__all__ = ["Prefix", "PrefixMethodConfig"]
