from lmadapt.methods.prompt.config import PromptMethodConfig
from lmadapt.methods.prompt.method import Prompt

__all__ = ["Prompt", "PromptMethodConfig"]
