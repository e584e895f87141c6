from lmadapt.methods import lazy_exports
from lmadapt.methods.rag.config import RagConfig

__getattr__ = lazy_exports(__name__, {"Rag": "method"})  # the class imports torch: on first use

__all__ = ["Rag", "RagConfig"]
