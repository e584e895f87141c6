from lmadapt.methods.unipelt.config import UnipeltMethodConfig
from lmadapt.methods.unipelt.method import Unipelt

__all__ = ["Unipelt", "UnipeltMethodConfig"]
