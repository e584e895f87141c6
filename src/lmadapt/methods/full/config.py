from dataclasses import dataclass, field


@dataclass
class FullConfig:
    """Full fine-tuning: every weight trains."""

    full_default_lr: float = field(default=5e-5, metadata={"help": "learning rate used when lr=0"})
