from dataclasses import dataclass, field

from lmadapt.errors import LmadaptError


@dataclass
class PromptMethodConfig:
    """Prompt tuning (Lester et al., 2021): trained embeddings of P virtual tokens before the input."""

    prompt_virtual_tokens: int = field(default=20, metadata={"help": "number of virtual tokens prepended"})
    prompt_init_text: str = field(default="", metadata={
        "help": "initialise the virtual tokens from this text's token embeddings (empty = random)"})
    prompt_default_lr: float = field(default=3e-2, metadata={"help": "learning rate used when lr=0"})

    def __post_init__(self) -> None:
        if self.prompt_virtual_tokens < 1:
            raise LmadaptError(f"prompt_virtual_tokens must be >= 1, got {self.prompt_virtual_tokens}")
