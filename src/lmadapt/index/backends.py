"""FAISS index factories: exact (flat), graph (HNSW) and compressed (IVF-PQ) inner-product search.

All indexes use the inner-product metric; with L2-normalized vectors the inner product is the
cosine similarity. The parameters below are chosen from the corpus size so that callers only pick
an index type; `benchmarks/index_scale.py` measures what these choices cost and recall.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import faiss
import numpy as np

from lmadapt.errors import LmadaptError

INDEX_TYPES = ("flat", "hnsw", "ivfpq")

HNSW_M = 32  # graph degree: links per node per layer
HNSW_EF_CONSTRUCTION = 80  # candidate list size while inserting
HNSW_EF_SEARCH = 64  # candidate list size while searching
IVFPQ_MIN_VECTORS = 256  # 8-bit PQ codebooks need 256 training points
IVFPQ_TRAIN_ITERS = 10  # k-means iterations when training IVF-PQ


@dataclass
class SearchParams:
    """Knobs that trade query speed for recall; they are stored with the index.

    ef_search: HNSW candidate list size (bigger = slower, higher recall).
    nprobe: IVF lists visited per query (bigger = slower, higher recall).
    """

    ef_search: int = HNSW_EF_SEARCH
    nprobe: int = 16

    def to_dict(self) -> dict[str, int]:
        """Plain dict for the index metadata."""
        return asdict(self)


def check_index_type(index_type: str) -> str:
    """Return `index_type` if known, else raise a one-line error listing the choices."""
    if index_type not in INDEX_TYPES:
        raise LmadaptError(
            f"unknown index type {index_type!r}; choose one of: {', '.join(INDEX_TYPES)}"
        )
    return index_type


def ivfpq_shape(n_vectors: int, dim: int) -> tuple[int, int]:
    """Pick (nlist, m) for IVF-PQ: ~4*sqrt(N) lists (>= 39 points each) and 8 dims per sub-code."""
    nlist = max(1, min(int(4 * math.sqrt(n_vectors)), n_vectors // 39))
    m = max(1, dim // 8)
    while dim % m:  # PQ needs m to divide dim
        m -= 1
    return nlist, m


def default_search_params(index_type: str, n_vectors: int, dim: int) -> SearchParams:
    """Search knobs for a fresh index of `n_vectors` vectors."""
    if index_type == "ivfpq":
        nlist, _ = ivfpq_shape(n_vectors, dim)
        return SearchParams(nprobe=min(nlist, max(16, nlist // 16)))
    return SearchParams()


def new_index(index_type: str, dim: int, train_vectors: np.ndarray) -> faiss.Index:
    """Create an empty index of `index_type`, trained on `train_vectors` (N, dim) if it needs it.

    `train_vectors` should be (a sample of) the vectors that will be added; only IVF-PQ uses them.
    """
    check_index_type(index_type)
    if index_type == "flat":
        return faiss.IndexFlatIP(dim)
    if index_type == "hnsw":
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        return index
    n_train = len(train_vectors)
    if n_train < IVFPQ_MIN_VECTORS:
        raise LmadaptError(
            f"index type ivfpq needs at least {IVFPQ_MIN_VECTORS} chunks to train on, got "
            f"{n_train}; use --index-type flat for small corpora"
        )
    nlist, m = ivfpq_shape(n_train, dim)
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFPQ(quantizer, dim, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
    for clustering in (index.cp, index.pq.cp):  # coarse and per-sub-space k-means
        clustering.niter = IVFPQ_TRAIN_ITERS
        clustering.min_points_per_centroid = 1  # small corpora: train on what there is, quietly
    sample = train_vectors
    max_train = max(39 * nlist, 256 * 256)  # what both k-means use at most; skip the rest
    if n_train > max_train:
        rows = np.random.default_rng(0).choice(n_train, size=max_train, replace=False)
        sample = train_vectors[np.sort(rows)]
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    return index


def apply_search_params(index: faiss.Index, params: SearchParams) -> None:
    """Set the query-time knobs that apply to this index type (no-op for flat)."""
    if isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = params.ef_search
    elif isinstance(index, faiss.IndexIVF):
        index.nprobe = min(params.nprobe, index.nlist)


def build_index(
    index_type: str, vectors: np.ndarray, params: SearchParams | None = None
) -> faiss.Index:
    """Create, train and fill an index of `index_type` with `vectors` (N, D) float32."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    index = new_index(index_type, vectors.shape[1], vectors)
    index.add(vectors)
    apply_search_params(
        index, params or default_search_params(index_type, len(vectors), vectors.shape[1])
    )
    return index
