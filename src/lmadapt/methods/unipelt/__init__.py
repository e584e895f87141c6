from lmadapt.methods import lazy_exports
from lmadapt.methods.unipelt.config import UnipeltMethodConfig

__getattr__ = lazy_exports(__name__, {"Unipelt": "method"})  # the class imports torch: on first use

__all__ = ["Unipelt", "UnipeltMethodConfig"]
