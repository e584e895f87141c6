from lmadapt.methods.adapter.config import AdapterMethodConfig
from lmadapt.methods.adapter.method import Adapter

__all__ = ["Adapter", "AdapterMethodConfig"]
