"""Generation with KV caches, and proxy-tuning's logit arithmetic (Liu et al., 2024).

Example::

    from lmadapt.decoding import GenerationConfig, ProxySource, generate
    texts = generate(ProxySource(base, expert, anti_expert, alpha=1.0, vocab_size=len(tok)),
                     tok, ["Question: ..."], GenerationConfig(max_new_tokens=32))
"""

from lmadapt.decoding.config import GenerationConfig
from lmadapt.decoding.engine import decode_batch, generate, pick_tokens
from lmadapt.decoding.scoring import sequence_logprobs
from lmadapt.decoding.sources import LogitSource, ModelSource, ProxySource, SharedLoraProxySource
from lmadapt.decoding.vocab import check_tokenizers_match, output_width

__all__ = [
    "GenerationConfig",
    "LogitSource",
    "ModelSource",
    "ProxySource",
    "SharedLoraProxySource",
    "check_tokenizers_match",
    "decode_batch",
    "generate",
    "output_width",
    "pick_tokens",
    "sequence_logprobs",
]
