from lmadapt.methods import lazy_exports
from lmadapt.methods.lora.config import LoraMethodConfig

__getattr__ = lazy_exports(__name__, {"Lora": "method"})  # the class imports torch: on first use

__all__ = ["Lora", "LoraMethodConfig"]
