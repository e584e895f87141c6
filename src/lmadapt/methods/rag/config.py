from dataclasses import dataclass, field

from lmadapt.errors import LmadaptError
from lmadapt.index.embed import DEFAULT_EMBEDDER


@dataclass
class RagConfig:
    """Retrieval-augmented prompting: the top-k chunks of an index before each input."""

    rag_index: str = field(default="", metadata={"path": True,
        "help": "index folder made by `lmadapt index build` (empty = index the training examples in memory)"})
    rag_k: int = field(default=4, metadata={"help": "chunks retrieved per input"})
    rag_embedder: str = field(default=DEFAULT_EMBEDDER, metadata={"path": True,
        "help": "embedder for the in-memory index; empty = the run's own model, mean-pooled "
                "(a given rag_index always uses the embedder that built it)"})
    rag_max_context_tokens: int = field(default=1024, metadata={
        "help": "token budget of the whole prompt (context + input), capped by the model's window"})

    def __post_init__(self) -> None:
        if self.rag_k < 1:
            raise LmadaptError(f"rag_k must be >= 1, got {self.rag_k}")
        if self.rag_max_context_tokens < 16:
            raise LmadaptError(f"rag_max_context_tokens must be >= 16, got {self.rag_max_context_tokens}")
