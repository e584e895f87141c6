from lmadapt.methods import lazy_exports
from lmadapt.methods.adapter.config import AdapterMethodConfig

__getattr__ = lazy_exports(__name__, {"Adapter": "method"})  # the class imports torch: on first use

__all__ = ["Adapter", "AdapterMethodConfig"]
