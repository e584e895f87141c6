from lmadapt.methods.lora.config import LoraMethodConfig
from lmadapt.methods.lora.method import Lora

__all__ = ["Lora", "LoraMethodConfig"]
