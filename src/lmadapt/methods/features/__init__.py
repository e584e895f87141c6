from lmadapt.methods.features.config import FeaturesConfig
from lmadapt.methods.features.method import Features

__all__ = ["Features", "FeaturesConfig"]
