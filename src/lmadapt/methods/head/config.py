from dataclasses import dataclass, field

from lmadapt.errors import LmadaptError


@dataclass
class HeadConfig:
    """Train only the output layer (classifier head or LM head), optionally the last k blocks too."""

    unfreeze_last: int = field(default=0, metadata={"help": "also train the last k transformer blocks"})
    head_default_lr: float = field(default=1e-3, metadata={"help": "learning rate used when lr=0"})
    cache_frozen: bool = field(default=True, metadata={
        "help": "with unfreeze_last=0: run the frozen body once per example (eval mode, no dropout) and train "
                "the head on its cached outputs; false: run it at every step in train mode"})

    def __post_init__(self) -> None:
        if self.unfreeze_last < 0:
            raise LmadaptError(f"unfreeze_last must be >= 0, got {self.unfreeze_last}")
