from dataclasses import dataclass, field

from lmadapt.errors import LmadaptError

ACTIVATIONS = ("relu", "gelu", "silu", "tanh")


@dataclass
class AdapterMethodConfig:
    """Bottleneck adapters: h + U f(D h) after transformer sub-layers (Houlsby et al., 2019)."""

    adapter_placement: str = field(default="houlsby", metadata={
        "help": "houlsby = after attention and after FFN; pfeiffer = after FFN only"})
    adapter_reduction: int = field(default=16, metadata={"help": "bottleneck size = hidden_size / reduction"})
    adapter_act: str = field(default="relu", metadata={"help": "non-linearity f: relu | gelu | silu | tanh"})
    adapter_default_lr: float = field(default=1e-3, metadata={"help": "learning rate used when lr=0"})

    def __post_init__(self) -> None:
        if self.adapter_placement not in ("houlsby", "pfeiffer"):
            raise LmadaptError(f"adapter_placement must be houlsby or pfeiffer, got {self.adapter_placement!r}")
        if self.adapter_reduction < 1:
            raise LmadaptError(f"adapter_reduction must be >= 1, got {self.adapter_reduction}")
        if self.adapter_act not in ACTIVATIONS:
            raise LmadaptError(f"adapter_act must be one of {', '.join(ACTIVATIONS)}, got {self.adapter_act!r}")
