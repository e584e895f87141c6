from lmadapt.methods.head.config import HeadConfig
from lmadapt.methods.head.method import Head

__all__ = ["Head", "HeadConfig"]
