from lmadapt.methods import lazy_exports
from lmadapt.methods.icl.config import ICLConfig

__getattr__ = lazy_exports(__name__, {"ICL": "method"})  # the class imports torch: on first use

__all__ = ["ICL", "ICLConfig"]
