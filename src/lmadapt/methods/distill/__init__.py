from lmadapt.methods.distill.config import DistillConfig
from lmadapt.methods.distill.method import Distill

__all__ = ["Distill", "DistillConfig"]
