from lmadapt.methods.rag.config import RagConfig
from lmadapt.methods.rag.method import Rag

__all__ = ["Rag", "RagConfig"]
