"""Search results and exact in-memory nearest-neighbour search (no disk), e.g. to pick ICL examples."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lmadapt.errors import LmadaptError


@dataclass(frozen=True)
class Hit:
    """One search result: the chunk text, where it came from, its cosine score and its id.

    `start`/`end` are the chunk's character offsets in its source document.
    """

    text: str
    source: str
    score: float
    chunk_id: int
    start: int = 0
    end: int = 0


def nearest(query_vecs: np.ndarray, matrix: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product (= cosine for unit vectors).

    Args:
        query_vecs: (Q, D) queries.
        matrix: (N, D) candidates.
        k: neighbours per query; clipped to N.
    Returns:
        scores (Q, k') float32 and ids (Q, k') int64, best first, k' = min(k, N); ties go to the
        lower id.
    """
    query_vecs = np.atleast_2d(np.asarray(query_vecs, dtype=np.float32))
    matrix = np.asarray(matrix, dtype=np.float32)
    if query_vecs.shape[1] != matrix.shape[1]:
        raise LmadaptError(
            f"query vectors have dimension {query_vecs.shape[1]} but the index has "
            f"{matrix.shape[1]}; embed queries with the embedder that built the index"
        )
    k = min(k, len(matrix))
    scores = query_vecs @ matrix.T  # (Q, N)
    ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]  # (Q, k)
    return np.take_along_axis(scores, ids, axis=1), ids.astype(np.int64)


class MemoryIndex:
    """Exact cosine search over a matrix kept in memory (optionally with the texts it came from).

    Build it from vectors you already have (`MemoryIndex(vectors, texts)`) or from texts
    (`MemoryIndex.from_texts(texts, embedder)`); `nearest` works on vectors, `search` on texts.
    """

    def __init__(self, vectors: np.ndarray, texts: Sequence[str] | None = None,
                 sources: Sequence[str] | None = None, embedder=None) -> None:
        self.vectors = np.asarray(vectors, dtype=np.float32)  # (N, D)
        self.texts = list(texts) if texts is not None else None
        self.sources = list(sources) if sources is not None else None
        self.embedder = embedder
        if self.texts is not None and len(self.texts) != len(self.vectors):
            raise ValueError(f"{len(self.texts)} texts for {len(self.vectors)} vectors")

    @classmethod
    def from_texts(cls, texts: Sequence[str], embedder, sources: Sequence[str] | None = None,
                   progress: bool = False) -> MemoryIndex:
        """Embed `texts` with `embedder` (an `Embedder`) and index them."""
        return cls(embedder.encode(list(texts), progress=progress), texts, sources, embedder)

    def __len__(self) -> int:
        return len(self.vectors)

    def nearest(self, query_vecs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (Q, min(k, N)), best first. See `nearest`."""
        return nearest(query_vecs, self.vectors, k)

    def search(self, queries: Sequence[str], k: int = 5) -> list[list[Hit]]:
        """Embed `queries` and return the k best stored texts for each."""
        if self.embedder is None or self.texts is None:
            raise ValueError("search() needs texts and an embedder; use nearest() on vectors")
        scores, ids = self.nearest(self.embedder.encode(list(queries)), k)
        sources = self.sources or [f"text:{i}" for i in range(len(self.texts))]
        return [
            [Hit(self.texts[i], sources[i], float(s), int(i), 0, len(self.texts[i]))
             for s, i in zip(row_scores, row_ids, strict=True)]
            for row_scores, row_ids in zip(scores, ids, strict=True)
        ]
