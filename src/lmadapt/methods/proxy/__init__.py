from lmadapt.methods import lazy_exports
from lmadapt.methods.proxy.config import ProxyConfig

__getattr__ = lazy_exports(__name__, {"Proxy": "method"})  # the class imports torch: on first use

__all__ = ["Proxy", "ProxyConfig"]
