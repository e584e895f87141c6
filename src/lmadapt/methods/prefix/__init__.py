from lmadapt.methods.prefix.config import PrefixMethodConfig
from lmadapt.methods.prefix.method import Prefix

__all__ = ["Prefix", "PrefixMethodConfig"]
