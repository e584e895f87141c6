from lmadapt.methods.icl.config import ICLConfig
from lmadapt.methods.icl.method import ICL

__all__ = ["ICL", "ICLConfig"]
