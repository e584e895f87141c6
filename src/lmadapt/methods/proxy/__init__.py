from lmadapt.methods.proxy.config import ProxyConfig
from lmadapt.methods.proxy.method import Proxy

__all__ = ["Proxy", "ProxyConfig"]
