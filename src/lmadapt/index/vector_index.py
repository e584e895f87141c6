"""Persistent vector index: FAISS vectors + SQLite chunk table + a JSON manifest, in one folder.

Layout of an index folder:

    INDEX/
      meta.json                 manifest: embedder, dim, index type, chunk params, counts, generation
      vectors-<generation>.faiss
      chunks-<generation>.sqlite

Every write produces a complete new generation of files, then swaps it in with one `os.replace`:
a fresh index is written to a temp folder beside INDEX and renamed onto it; a rebuild or `add`
writes the new generation's files inside INDEX and then replaces meta.json, which names them.
An interrupted write therefore leaves the previous index intact and queryable.

Every write (`build`, `add`) holds the index folder's exclusive OS lock (`lmadapt.outdir.locked`)
for its whole length; a second writer waits up to `lock_timeout` seconds, then fails with one
line naming the holder's pid. `add` re-reads the index under the lock, so two concurrent adds
never lose each other's documents. What a killed write left
(another generation's files, SQLite journals, `.meta.json.tmp-*`, a `.INDEX.tmp-*` folder) is
removed by the next write. meta.json's `generation` must be 12 hex digits: it names files, so a
tampered manifest can never point outside the folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import faiss
import numpy as np

from lmadapt.errors import LmadaptError
from lmadapt.index.backends import (
    SearchParams,
    apply_search_params,
    build_index,
    check_index_type,
    default_search_params,
)
from lmadapt.index.documents import Chunk, check_chunk_params, chunk_corpus
from lmadapt.index.embed import Embedder, embedder_mismatch
from lmadapt.index.memory import Hit
from lmadapt.index.store import ChunkStore
from lmadapt.outdir import locked

FORMAT = "lmadapt-index"
FORMAT_VERSION = 1
META_FILE = "meta.json"
DEFAULT_CHUNK_TOKENS = 200
DEFAULT_OVERLAP = 32
DEFAULT_LOCK_TIMEOUT = 60.0  # seconds a write waits for another writer of the same index

GENERATION = re.compile(r"[0-9a-f]{12}")  # uuid4().hex[:12], see _commit
GENERATION_FILE = re.compile(r"(?:vectors|chunks)-([0-9a-f]{12})\.(?:faiss|sqlite(?:-journal|-wal|-shm)?)")
META_TMP = re.compile(r"\.meta\.json\.tmp-[0-9a-f]{8}")  # _write_json_atomic's temp file
REQUIRED = {"embedder": dict, "dim": int, "index_type": str, "chunk_tokens": int, "overlap": int,
            "text_field": str, "count": int, "search": dict}

Items = Path | str | Sequence[str | Chunk]


def _files(folder: Path, generation: str) -> tuple[Path, Path]:
    return folder / f"vectors-{generation}.faiss", folder / f"chunks-{generation}.sqlite"


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_meta(path: Path | str) -> dict:
    """The manifest of the index at `path`; one-line errors when missing or not an index."""
    path = Path(path)
    meta_path = path / META_FILE
    if not path.exists():
        raise LmadaptError(f"no index at {path}; create one with `lmadapt index build --out {path}`")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # ValueError: bad JSON or bad UTF-8
        raise LmadaptError(
            f"{path} is not an lmadapt index (no readable {META_FILE}); rebuild it with "
            "`lmadapt index build`"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise LmadaptError(f"{path} is not an lmadapt index ({META_FILE} is not an index manifest); "
                           "rebuild it with `lmadapt index build`")
    if meta.get("version") != FORMAT_VERSION:
        raise LmadaptError(f"{path} is not a version-{FORMAT_VERSION} lmadapt index; rebuild it")
    generation = meta.get("generation")
    if not isinstance(generation, str) or not GENERATION.fullmatch(generation):
        raise LmadaptError(f"{meta_path}: generation {generation!r} is not 12 hex digits; the manifest "
                           "was edited or damaged, rebuild the index with `lmadapt index build`")
    for key, kind in REQUIRED.items():
        if not isinstance(meta.get(key), kind):
            raise LmadaptError(f"{meta_path}: {key!r} is missing or not a {kind.__name__}; the manifest "
                               "was edited or damaged, rebuild the index with `lmadapt index build`")
    return meta


def _ours(name: str) -> bool:
    """A file name an index write creates."""
    return name == META_FILE or bool(GENERATION_FILE.fullmatch(name) or META_TMP.fullmatch(name))


def clean_orphans(path: Path, keep: str | None) -> list[Path]:
    """Remove what killed writes of the index at `path` left; call only while holding its lock.

    Inside the folder: generation files (and SQLite journals) of any generation but `keep`, and
    `.meta.json.tmp-*`; `keep=None` (no index there yet) leaves generation files alone. Beside
    it: `.NAME.tmp-XXXXXXXX` folders of a fresh build, when they hold nothing but index files.
    A user's files never match these names.
    """
    removed: list[Path] = []
    fresh_tmp = re.compile(rf"\.{re.escape(path.name)}\.tmp-[a-z0-9_]{{8}}")
    if path.parent.is_dir():
        for entry in path.parent.iterdir():
            if (fresh_tmp.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink()
                    and all(_ours(p.name) and p.is_file() for p in entry.iterdir())):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
    if path.is_dir():
        for entry in path.iterdir():
            match = GENERATION_FILE.fullmatch(entry.name)
            stale = (match is not None and keep is not None and match.group(1) != keep) or bool(
                META_TMP.fullmatch(entry.name))
            if stale and entry.is_file():
                entry.unlink(missing_ok=True)
                removed.append(entry)
    return removed


def _commit(path: Path, write: Callable[[Path, str], dict], adopt: bool = False) -> dict:
    """Run write(folder, generation) -> meta, then atomically make that generation current.

    Call only while holding the index lock. A non-empty folder must be an index, unless `adopt`
    (`index build --overwrite`): then the index files are written beside the user's files (a
    meta.json that is not an index's is still refused, never overwritten).
    """
    generation = uuid.uuid4().hex[:12]
    if path.exists() and not path.is_dir():
        raise LmadaptError(f"{path} is a file, not an index folder; pass a folder name")
    if path.exists() and any(path.iterdir()):
        try:
            current: str | None = read_meta(path)["generation"]  # refuse a folder that is not an index
        except LmadaptError:
            if not adopt or (path / META_FILE).exists():
                raise
            current = None
        clean_orphans(path, current)
        try:
            meta = write(path, generation)
            _write_json_atomic(path / META_FILE, meta)
        except BaseException:
            for leftover in _files(path, generation):
                leftover.unlink(missing_ok=True)
            raise
        clean_orphans(path, generation)  # the generations this one replaces
        return meta
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_orphans(path, None)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; give it ordinary folder permissions
    try:
        meta = write(tmp, generation)
        _write_json_atomic(tmp / META_FILE, meta)
        os.replace(tmp, path)  # path is absent or an empty folder: atomic on POSIX
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def _to_chunks(items: Items, embedder: Embedder, chunk_tokens: int, overlap: int,
               text_field: str) -> list[Chunk]:
    """Documents path -> token-window chunks; texts -> one chunk each; duplicates dropped."""
    if isinstance(items, str | Path):
        check_chunk_params(chunk_tokens, overlap, embedder.max_tokens)
        chunks = chunk_corpus(items, embedder.tokenizer, chunk_tokens, overlap, text_field)
        if not chunks:
            raise LmadaptError(f"no text to index under {items} (every file was empty or skipped)")
        return chunks
    seen: set[str] = set()
    chunks = []
    for i, item in enumerate(items):
        chunk = item if isinstance(item, Chunk) else Chunk(item, f"text:{i}", 0, len(item))
        if chunk.text.strip() and chunk.text_hash not in seen:
            seen.add(chunk.text_hash)
            chunks.append(chunk)
    return chunks


class VectorIndex:
    """Cosine-similarity search over chunks, stored on disk. Use `build`, `open`, `add`, `search`."""

    def __init__(self, path: Path, meta: dict, embedder: Embedder | None = None) -> None:
        self.path = path
        self._embedder = embedder
        self._load(meta)

    def _load(self, meta: dict) -> None:
        """Read the FAISS file and open the chunk table of the generation `meta` names."""
        vectors_file, chunks_file = _files(self.path, meta["generation"])
        try:
            params = SearchParams(**meta["search"])
        except TypeError:
            raise LmadaptError(f"{self.path / META_FILE}: 'search' has unknown keys "
                               f"({', '.join(map(str, meta['search']))}); rebuild the index") from None
        try:
            self.faiss_index = faiss.read_index(str(vectors_file))
            self.store = ChunkStore(chunks_file)
        except (RuntimeError, sqlite3.Error):
            raise LmadaptError(
                f"index {self.path} is damaged ({vectors_file.name} or {chunks_file.name} "
                "unreadable); rebuild it with `lmadapt index build`"
            ) from None
        self.meta = meta
        apply_search_params(self.faiss_index, params)

    # ---- creating -------------------------------------------------------------------------------
    @classmethod
    def build(cls, items: Items, embedder: Embedder, path: Path | str, index_type: str = "flat",
              chunk_tokens: int | None = None, overlap: int = DEFAULT_OVERLAP,
              text_field: str = "text", progress: bool = False,
              lock_timeout: float = DEFAULT_LOCK_TIMEOUT, overwrite: bool = False) -> VectorIndex:
        """Embed `items` and write a new index at `path` (replacing an index already there).

        `items` is a documents path (file or folder of .txt/.md/.jsonl/.pdf, chunked by the
        embedder's tokens) or a list of texts / `Chunk`s stored as they are. `chunk_tokens`
        defaults to DEFAULT_CHUNK_TOKENS, or the embedder's limit when that is smaller.
        A non-empty folder that is not an index is refused, unless `overwrite` (the index files
        are then added beside what is there). Waits up to `lock_timeout` s for another writer.
        """
        path = Path(path)
        if chunk_tokens is None:
            chunk_tokens = min(DEFAULT_CHUNK_TOKENS, embedder.max_tokens - 2)
            overlap = min(overlap, chunk_tokens // 4)
        check_index_type(index_type)
        with locked(path, lock_timeout):
            return cls._build_locked(items, embedder, path, index_type, chunk_tokens, overlap,
                                     text_field, progress, overwrite)

    @classmethod
    def _build_locked(cls, items: Items, embedder: Embedder, path: Path, index_type: str,
                      chunk_tokens: int, overlap: int, text_field: str, progress: bool,
                      overwrite: bool) -> VectorIndex:
        chunks = _to_chunks(items, embedder, chunk_tokens, overlap, text_field)
        if not chunks:
            raise LmadaptError("nothing to index: every text given was empty")
        vectors = embedder.encode([c.text for c in chunks], progress=progress)  # (N, D)
        index = build_index(index_type, vectors)
        now = time.strftime("%Y-%m-%dT%H:%M:%S")
        meta = {
            "format": FORMAT, "version": FORMAT_VERSION, "embedder": embedder.describe(),
            "dim": embedder.dim, "index_type": index_type, "chunk_tokens": chunk_tokens,
            "overlap": overlap, "text_field": text_field, "count": len(chunks),
            "search": default_search_params(index_type, len(chunks), embedder.dim).to_dict(),
            "created": now, "updated": now,
        }

        def write(folder: Path, generation: str) -> dict:
            vectors_file, chunks_file = _files(folder, generation)
            faiss.write_index(index, str(vectors_file))
            store = ChunkStore(chunks_file, readonly=False)
            try:
                store.add(chunks, first_id=0)
            finally:
                store.close()
            return {**meta, "generation": generation}

        return cls(path, _commit(path, write, adopt=overwrite), embedder)

    @classmethod
    def open(cls, path: Path | str, embedder: Embedder | None = None) -> VectorIndex:
        """Open the index at `path`. With `embedder`, check that it is the one that built it;
        without, the stored embedder is loaded on first text search."""
        path = Path(path)
        index = cls(path, read_meta(path))
        if embedder is not None:
            index._check_embedder(embedder)
            index._embedder = embedder
        return index

    def add(self, items: Items, progress: bool = False,
            lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> int:
        """Embed and append chunks not stored yet (by text hash); returns how many were new.

        Holds the index lock (waiting up to `lock_timeout` s for another writer) and first
        reloads the index if another process changed it since it was opened."""
        with locked(self.path, lock_timeout):
            current = read_meta(self.path)
            if current["generation"] != self.meta["generation"]:
                self.store.close()
                self._load(current)
                if self._embedder is not None:
                    self._check_embedder(self._embedder)
            clean_orphans(self.path, current["generation"])
            return self._add_locked(items, progress)

    def _add_locked(self, items: Items, progress: bool) -> int:
        embedder = self.embedder
        chunks = _to_chunks(items, embedder, self.meta["chunk_tokens"], self.meta["overlap"],
                            self.meta["text_field"])
        known = self.store.known_hashes(c.text_hash for c in chunks)
        new = [c for c in chunks if c.text_hash not in known]
        if not new:
            return 0
        vectors = embedder.encode([c.text for c in new], progress=progress)  # (M, D)
        grown = faiss.clone_index(self.faiss_index)
        grown.add(vectors)
        first_id = self.faiss_index.ntotal
        old_chunks_file = self.store.path

        def write(folder: Path, generation: str) -> dict:
            vectors_file, chunks_file = _files(folder, generation)
            faiss.write_index(grown, str(vectors_file))
            shutil.copyfile(old_chunks_file, chunks_file)
            store = ChunkStore(chunks_file, readonly=False)
            try:
                store.add(new, first_id=first_id)
            finally:
                store.close()
            updated = time.strftime("%Y-%m-%dT%H:%M:%S")
            return {**self.meta, "generation": generation, "count": first_id + len(new),
                    "updated": updated}

        meta = _commit(self.path, write)
        self.store.close()
        self._load(meta)
        return len(new)

    # ---- querying -------------------------------------------------------------------------------
    @property
    def embedder(self) -> Embedder:
        """The embedder for queries (the stored one, loaded and checked on first use)."""
        if self._embedder is None:
            stored = self.meta["embedder"]
            embedder = Embedder(stored["ref"], pooling=stored["pooling"],
                                normalize=stored["normalize"], max_tokens=stored["max_tokens"])
            self._check_embedder(embedder)
            self._embedder = embedder
        return self._embedder

    def _check_embedder(self, embedder: Embedder) -> None:
        stored = self.meta["embedder"]
        why = embedder_mismatch(stored, embedder)
        if why:
            raise LmadaptError(
                f"index {self.path} was built with embedder {stored['ref']!r} (dim "
                f"{stored['dim']}), but {embedder.ref!r} differs: {why}; query with the same "
                "embedder or rebuild the index"
            )

    def __len__(self) -> int:
        return int(self.faiss_index.ntotal)

    def search(self, queries: Sequence[str], k: int = 5) -> list[list[Hit]]:
        """The k most similar chunks for each query text, best first."""
        if isinstance(queries, str):
            queries = [queries]
        return self.search_vectors(self.embedder.encode(list(queries)), k)

    def search_vectors(self, query_vecs: np.ndarray, k: int = 5) -> list[list[Hit]]:
        """The k most similar chunks for each query vector (Q, D), best first."""
        query_vecs = np.ascontiguousarray(np.atleast_2d(query_vecs), dtype=np.float32)  # (Q, D)
        if query_vecs.shape[1] != self.meta["dim"]:
            raise LmadaptError(
                f"query vectors have dimension {query_vecs.shape[1]} but index {self.path} has "
                f"{self.meta['dim']}; embed with {self.meta['embedder']['ref']!r}"
            )
        scores, ids = self.faiss_index.search(query_vecs, min(k, len(self)))  # (Q, k) each
        chunks = self.store.get(i for i in ids.ravel() if i >= 0)
        return [
            [Hit(chunks[i].text, chunks[i].source, float(s), int(i), chunks[i].start, chunks[i].end)
             for s, i in zip(row_scores, row_ids, strict=True) if i >= 0]
            for row_scores, row_ids in zip(scores, ids, strict=True)
        ]

    def close(self) -> None:
        """Release the SQLite connection."""
        self.store.close()

    def __repr__(self) -> str:
        return (f"VectorIndex({str(self.path)!r}, {self.meta['index_type']}, {len(self)} chunks, "
                f"embedder={self.meta['embedder']['ref']!r})")
