from lmadapt.methods import lazy_exports
from lmadapt.methods.distill.config import DistillConfig

__getattr__ = lazy_exports(__name__, {"Distill": "method"})  # the class imports torch: on first use

__all__ = ["Distill", "DistillConfig"]
