from dataclasses import dataclass, field


@dataclass
class FullConfig:
    """Full fine-tuning: every weight trains."""

    full_default_lr: float = field(default=5e-5, metadata={"help": "learning rate used when lr=0"})
    full_head_lr: float = field(default=1e-3, metadata={
        "help": "encoders: learning rate of the classification head (classifier + pooler), which "
                "starts untrained; 0 = the same lr as the body"})

    def __post_init__(self) -> None:
        if self.full_head_lr < 0:
            from lmadapt.errors import LmadaptError

            raise LmadaptError(f"full_head_lr must be >= 0, got {self.full_head_lr}")
