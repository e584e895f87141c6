"""Persistent vector index for retrieval (RAG, nearest-example ICL) and its `lmadapt index` CLI.

    from lmadapt.index import Embedder, VectorIndex, MemoryIndex
    embedder = Embedder("minilm")
    index = VectorIndex.build(Path("docs/"), embedder, "my.index", index_type="flat")
    hits = VectorIndex.open("my.index").search(["what is LoRA?"], k=5)[0]   # list[Hit]
    picks = MemoryIndex.from_texts(train_texts, embedder).search(test_texts, k=4)
"""

from lmadapt.index.backends import INDEX_TYPES, SearchParams
from lmadapt.index.documents import Chunk, Document, SkippedInputWarning, read_documents
from lmadapt.index.embed import DEFAULT_EMBEDDER, Embedder
from lmadapt.index.memory import Hit, MemoryIndex, nearest
from lmadapt.index.vector_index import VectorIndex, read_meta

__all__ = [
    "DEFAULT_EMBEDDER",
    "INDEX_TYPES",
    "Chunk",
    "Document",
    "Embedder",
    "Hit",
    "MemoryIndex",
    "SearchParams",
    "SkippedInputWarning",
    "VectorIndex",
    "nearest",
    "read_documents",
    "read_meta",
]
