"""Generation settings: one flat dataclass, checked on construction."""

from __future__ import annotations

from dataclasses import dataclass, field

from lmadapt.errors import LmadaptError


@dataclass
class GenerationConfig:
    """How to decode. Greedy by default; sampling when `do_sample` is true.

    Fields carry their help text in `metadata["help"]` so the CLI and YAML loaders can reuse it.
    """

    max_new_tokens: int = field(
        default=64,
        metadata={
            "help": "Most tokens to generate per prompt (EOS or a stop string may end sooner)."
        },
    )
    do_sample: bool = field(
        default=False,
        metadata={"help": "Sample from the distribution; false means greedy (argmax)."},
    )
    temperature: float = field(
        default=1.0,
        metadata={"help": "Divide logits by this before sampling (> 0). Ignored when greedy."},
    )
    top_k: int = field(
        default=0, metadata={"help": "Keep only the k most likely tokens when sampling (0 = off)."}
    )
    top_p: float = field(
        default=1.0,
        metadata={
            "help": "Nucleus sampling: keep the smallest set of tokens whose mass reaches p (1.0 = off)."
        },
    )
    stop: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Strings that end a row's generation; the output is cut before the first one."
        },
    )
    seed: int | None = field(
        default=None,
        metadata={"help": "Seed for sampling, for reproducible outputs (None = nondeterministic)."},
    )

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise LmadaptError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not self.temperature > 0:
            raise LmadaptError(
                f"temperature must be > 0, got {self.temperature}; for greedy decoding set do_sample=False"
            )
        if self.top_k < 0:
            raise LmadaptError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise LmadaptError(f"top_p must be in (0, 1], got {self.top_p}")
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if any(not s for s in self.stop):
            raise LmadaptError("stop strings must be non-empty; remove the empty entry")
