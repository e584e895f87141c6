from lmadapt.methods import lazy_exports
from lmadapt.methods.zero_shot.config import ZeroShotConfig

__getattr__ = lazy_exports(__name__, {"ZeroShot": "method"})  # the class imports torch: on first use

__all__ = ["ZeroShot", "ZeroShotConfig"]
