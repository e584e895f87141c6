from dataclasses import dataclass, field

from lmadapt.errors import LmadaptError


@dataclass
class LoraMethodConfig:
    """LoRA (Hu et al., 2021): W x + (alpha/r) · B A x on the target projections, A: (r, d_in), B: (d_out, r)."""

    lora_r: int = field(default=8, metadata={"help": "rank r of the update B A"})
    lora_alpha: float = field(default=16.0, metadata={"help": "scale: the update is multiplied by alpha/r"})
    lora_dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA branch's input"})
    lora_target_modules: tuple[str, ...] = field(default=(), metadata={
        "help": "module names to adapt, comma-separated (default: query/value projections, found per architecture)"})
    lora_default_lr: float = field(default=1e-3, metadata={"help": "learning rate used when lr=0"})

    def __post_init__(self) -> None:
        if self.lora_r < 1:
            raise LmadaptError(f"lora_r must be >= 1, got {self.lora_r}")
        if self.lora_alpha <= 0:
            raise LmadaptError(f"lora_alpha must be > 0, got {self.lora_alpha}")
        if not 0 <= self.lora_dropout < 1:
            raise LmadaptError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
