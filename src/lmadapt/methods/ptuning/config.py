from dataclasses import dataclass, field

from lmadapt.errors import LmadaptError


@dataclass
class PtuningMethodConfig:
    """P-tuning (Liu et al., 2021): virtual-token embeddings produced by a small prompt encoder."""

    ptuning_virtual_tokens: int = field(default=20, metadata={"help": "number of virtual tokens prepended"})
    ptuning_encoder: str = field(default="MLP", metadata={"help": "prompt encoder: MLP | LSTM"})
    ptuning_hidden: int = field(default=128, metadata={"help": "hidden size of the prompt encoder"})
    ptuning_default_lr: float = field(default=5e-3, metadata={"help": "learning rate used when lr=0"})

    def __post_init__(self) -> None:
        if self.ptuning_encoder not in ("MLP", "LSTM"):
            raise LmadaptError(f"ptuning_encoder must be MLP or LSTM, got {self.ptuning_encoder!r}")
        if self.ptuning_virtual_tokens < 1 or self.ptuning_hidden < 1:
            raise LmadaptError("ptuning_virtual_tokens and ptuning_hidden must be >= 1")
