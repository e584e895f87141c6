from dataclasses import dataclass, field

from lmadapt.errors import LmadaptError


@dataclass
class PrefixMethodConfig:
    """Prefix tuning (Li & Liang, 2021): learned key/value prefixes in every attention layer."""

    prefix_virtual_tokens: int = field(default=20, metadata={"help": "prefix length P (virtual tokens per layer)"})
    prefix_projection: bool = field(default=False, metadata={
        "help": "reparameterise the prefix through a 2-layer MLP (Li & Liang §4.3) while training"})
    prefix_hidden: int = field(default=256, metadata={"help": "hidden size of that MLP"})
    prefix_default_lr: float = field(default=5e-3, metadata={"help": "learning rate used when lr=0"})

    def __post_init__(self) -> None:
        if self.prefix_virtual_tokens < 1 or self.prefix_hidden < 1:
            raise LmadaptError("prefix_virtual_tokens and prefix_hidden must be >= 1")
