from lmadapt.methods.full.config import FullConfig
from lmadapt.methods.full.method import Full

__all__ = ["Full", "FullConfig"]
