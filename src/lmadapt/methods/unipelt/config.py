from dataclasses import dataclass, field

from lmadapt.errors import LmadaptError
from lmadapt.methods.adapter.config import ACTIVATIONS


@dataclass
class UnipeltMethodConfig:
    """UniPELT (Mao et al., 2022): gated LoRA + prefix tuning + bottleneck adapter."""

    unipelt_lora: bool = field(default=True, metadata={"help": "use the gated LoRA part (query/value)"})
    unipelt_prefix: bool = field(default=True, metadata={"help": "use the gated prefix-tuning part"})
    unipelt_adapter: bool = field(default=True, metadata={"help": "use the gated adapter part (after FFN)"})
    unipelt_gated: bool = field(default=True, metadata={
        "help": "learn the gates σ(W x); false fixes every gate to 1 (the plain sum of the parts)"})
    unipelt_lora_r: int = field(default=8, metadata={"help": "LoRA rank"})
    unipelt_lora_alpha: float = field(default=16.0, metadata={"help": "LoRA scale numerator (update × alpha/r)"})
    unipelt_prefix_tokens: int = field(default=10, metadata={"help": "prefix length per layer"})
    unipelt_adapter_reduction: int = field(default=16, metadata={"help": "adapter bottleneck = hidden / reduction"})
    unipelt_adapter_act: str = field(default="relu", metadata={"help": "adapter non-linearity"})
    unipelt_default_lr: float = field(default=1e-3, metadata={"help": "learning rate used when lr=0"})

    def __post_init__(self) -> None:
        if not (self.unipelt_lora or self.unipelt_prefix or self.unipelt_adapter):
            raise LmadaptError("unipelt needs at least one of unipelt_lora, unipelt_prefix, unipelt_adapter")
        if min(self.unipelt_lora_r, self.unipelt_prefix_tokens, self.unipelt_adapter_reduction) < 1:
            raise LmadaptError("unipelt_lora_r, unipelt_prefix_tokens and unipelt_adapter_reduction must be >= 1")
        if self.unipelt_adapter_act not in ACTIVATIONS:
            raise LmadaptError(f"unipelt_adapter_act must be one of {', '.join(ACTIVATIONS)}")
