from dataclasses import dataclass, field

from lmadapt.errors import LmadaptError


@dataclass
class ICLConfig:
    """Few-shot in-context learning: k labelled demonstrations before each input."""

    shots: int = field(default=4, metadata={"help": "demonstrations per prompt (k)"})
    selection: str = field(default="random", metadata={"help": "random (one fixed seeded set) | nearest (most similar training examples per input)"})
    embedder: str = field(default="", metadata={"path": True, "help": "model used to embed for selection=nearest (empty = the LM's own last-token states)"})
    max_prompt_tokens: int = field(default=1024, metadata={"help": "token budget for demonstrations + input (capped by the context window)"})
    pool_size: int = field(default=2000, metadata={"help": "training examples kept as the demonstration pool"})

    def __post_init__(self) -> None:
        if self.shots < 1:
            raise LmadaptError(f"shots must be >= 1, got {self.shots}")
        if self.selection not in ("random", "nearest"):
            raise LmadaptError(f"selection must be random or nearest, got {self.selection!r}")
        if self.max_prompt_tokens < 16:
            raise LmadaptError(f"max_prompt_tokens must be >= 16, got {self.max_prompt_tokens}")
