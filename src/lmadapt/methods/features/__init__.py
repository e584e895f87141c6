from lmadapt.methods import lazy_exports
from lmadapt.methods.features.config import FeaturesConfig

__getattr__ = lazy_exports(__name__, {"Features": "method"})  # the class imports torch: on first use

__all__ = ["Features", "FeaturesConfig"]
