"""lmadapt: adapt a pretrained language model to a task by every common method, and compare them."""

__version__ = "0.1.0"
