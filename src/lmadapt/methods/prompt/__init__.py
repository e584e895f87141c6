from lmadapt.methods import lazy_exports
from lmadapt.methods.prompt.config import PromptMethodConfig

__getattr__ = lazy_exports(__name__, {"Prompt": "method"})  # the class imports torch: on first use

__all__ = ["Prompt", "PromptMethodConfig"]
