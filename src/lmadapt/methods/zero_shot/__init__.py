from lmadapt.methods.zero_shot.config import ZeroShotConfig
from lmadapt.methods.zero_shot.method import ZeroShot

__all__ = ["ZeroShot", "ZeroShotConfig"]
