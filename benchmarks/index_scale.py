"""How the index types scale: build time, memory, query latency and recall@10 versus exact search.

Synthetic data: random Gaussian vectors, L2-normalized (so inner product = cosine), dim 384
(MiniLM's width). Independent random queries. Random data in high dimension is the hardest case for
approximate search (every point is nearly equidistant), so recall here is a lower bound on what real
embeddings give.

Ground truth is exact inner-product search (faiss IndexFlatIP) over the `--recall-queries` sample.
Latency is measured one query at a time (batch 1), the way an interactive `index query` runs.

    python benchmarks/index_scale.py --sizes 10000 --out /tmp/r.json          # quick
    python benchmarks/index_scale.py --sizes 10000,100000,1000000 --out results.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import faiss
import numpy as np
import psutil

from lmadapt.index.backends import (
    INDEX_TYPES,
    SearchParams,
    apply_search_params,
    build_index,
    default_search_params,
)

K = 10


def random_unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    """(n, dim) float32 Gaussian vectors scaled to unit length, generated in blocks."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        block = rng.standard_normal((min(100_000, n - start), dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start : start + len(block)] = block
    return out


def clustered_unit_vectors(n: int, dim: int, seed: int, n_centres: int) -> np.ndarray:
    """(n, dim) unit vectors around `n_centres` random centres: closer to real embeddings, which
    sit on a clumpy, low-dimensional set. Corpus and queries share the centres (fixed seed)."""
    centres = random_unit_vectors(n_centres, dim, seed=7)
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        size = min(100_000, n - start)
        block = centres[rng.integers(0, len(centres), size)]  # (size, dim)
        block = block + 0.05 * rng.standard_normal((size, dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start : start + size] = block
    return out


def exact_neighbours(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """(Q, k) ids of the true top-k inner products."""
    exact = faiss.IndexFlatIP(base.shape[1])
    exact.add(base)
    _, ids = exact.search(queries, k)
    return ids


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the true top-k that the index returned; both (Q, k)."""
    hits = [len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits)) / truth.shape[1]


def latency_ms(index: faiss.Index, queries: np.ndarray) -> tuple[float, float]:
    """(p50, p99) milliseconds of single-query searches."""
    times = []
    for row in range(len(queries)):
        start = time.perf_counter()
        index.search(queries[row : row + 1], K)
        times.append((time.perf_counter() - start) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def search_settings(index_type: str, n: int, dim: int) -> list[SearchParams]:
    """The library default, plus one slower/more accurate setting for approximate types."""
    default = default_search_params(index_type, n, dim)
    if index_type == "hnsw":
        return [default, SearchParams(ef_search=4 * default.ef_search)]
    if index_type == "ivfpq":
        return [default, SearchParams(nprobe=4 * default.nprobe)]
    return [default]


def bench_one(index_type: str, base: np.ndarray, queries: np.ndarray, truth: np.ndarray,
              latency_queries: int) -> list[dict]:
    """Build one index over `base` and measure it under each search setting."""
    process = psutil.Process()
    rss_before = process.memory_info().rss
    start = time.perf_counter()
    index = build_index(index_type, base)
    build_s = time.perf_counter() - start
    rss_delta_mb = (process.memory_info().rss - rss_before) / 2**20
    index_mb = faiss.serialize_index(index).nbytes / 2**20
    rows = []
    for params in search_settings(index_type, len(base), base.shape[1]):
        apply_search_params(index, params)
        _, found = index.search(queries, K)
        p50, p99 = latency_ms(index, queries[:latency_queries])
        knob = {"hnsw": f"efSearch={params.ef_search}",
                "ivfpq": f"nprobe={params.nprobe}/{getattr(index, 'nlist', 0)}"}.get(index_type, "-")
        rows.append({
            "n": len(base), "index_type": index_type, "search": knob,
            "build_s": round(build_s, 2), "index_mb": round(index_mb, 1),
            "rss_delta_mb": round(rss_delta_mb, 1), "p50_ms": round(p50, 3),
            "p99_ms": round(p99, 3), "recall_at_10": round(recall_at_k(found, truth), 4),
        })
        print(format_row(rows[-1]), flush=True)
    del index
    return rows


HEADER = ("| vectors | type | search | build s | index MB | RSS +MB | p50 ms | p99 ms | recall@10 |\n"
          "|---:|---|---|---:|---:|---:|---:|---:|---:|")


def format_row(row: dict) -> str:
    """One Markdown table row."""
    return (f"| {row['n']:,} | {row['index_type']} | {row['search']} | {row['build_s']} | "
            f"{row['index_mb']} | {row['rss_delta_mb']} | {row['p50_ms']} | {row['p99_ms']} | "
            f"{row['recall_at_10']} |")


def main() -> None:
    """Parse options, run every (size, type) pair, print the table and write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000",
                        help="comma-separated corpus sizes (number of vectors)")
    parser.add_argument("--types", default=",".join(INDEX_TYPES),
                        help="comma-separated index types to measure")
    parser.add_argument("--dim", type=int, default=384, help="vector dimension")
    parser.add_argument("--recall-queries", type=int, default=1000,
                        help="queries used for recall@10 (ground truth by exact search)")
    parser.add_argument("--latency-queries", type=int, default=200,
                        help="queries timed one at a time for p50/p99")
    parser.add_argument("--threads", type=int, default=0, help="faiss threads (0 = all cores)")
    parser.add_argument("--seed", type=int, default=0, help="random seed for data and queries")
    parser.add_argument("--data", choices=("random", "clustered"), default="random",
                        help="random: i.i.d. Gaussian (hardest case); clustered: n/100 centres")
    parser.add_argument("--out", default="index_scale.json",
                        help="where to write the JSON results (rewritten after every row)")
    args = parser.parse_args()
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    print(HEADER, flush=True)
    rows: list[dict] = []
    result = {
        "rows": rows, "data": args.data, "dim": args.dim, "k": K,
        "recall_queries": args.recall_queries, "latency_queries": args.latency_queries,
        "faiss": faiss.__version__, "threads": faiss.omp_get_max_threads(),
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
    }
    for n in [int(s) for s in args.sizes.split(",")]:
        if args.data == "clustered":
            base = clustered_unit_vectors(n, args.dim, args.seed, n_centres=n // 100)
            queries = clustered_unit_vectors(args.recall_queries, args.dim, args.seed + 1,
                                             n_centres=n // 100)
        else:
            base = random_unit_vectors(n, args.dim, seed=args.seed)
            queries = random_unit_vectors(args.recall_queries, args.dim, seed=args.seed + 1)
        truth = exact_neighbours(base, queries, K)
        for index_type in args.types.split(","):
            rows += bench_one(index_type, base, queries, truth, args.latency_queries)
            with open(args.out, "w") as f:  # keep partial results if a long run is stopped
                json.dump(result, f, indent=2)
        del base
    print("\n" + HEADER)
    for row in rows:
        print(format_row(row))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
