"""SQLite table of chunk texts beside the FAISS file: row id == position of the vector in FAISS."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

from lmadapt.index.documents import Chunk

SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,          -- position of the vector in the FAISS index
    hash TEXT NOT NULL UNIQUE,       -- sha256 of text: identical chunks are stored once
    text TEXT NOT NULL,
    source TEXT NOT NULL,            -- file, file:line (JSONL) or file#page=N (PDF)
    start_char INTEGER NOT NULL,     -- [start_char, end_char) within the source document
    end_char INTEGER NOT NULL
);
"""


class ChunkStore:
    """Chunk texts and provenance, looked up by vector id."""

    def __init__(self, path: Path, readonly: bool = True) -> None:
        self.path = path
        if readonly:  # read-only: an index opened in one thread may search or add in another
            uri = Path(path).resolve().as_uri()  # percent-encoded: a '#' or '?' in a folder name is safe
            self.conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, check_same_thread=False)
        else:
            self.conn = sqlite3.connect(path)
            self.conn.executescript(SCHEMA)

    def count(self) -> int:
        """Number of chunks stored."""
        return self.conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]

    def known_hashes(self, hashes: Iterable[str]) -> set[str]:
        """The subset of `hashes` already stored."""
        wanted = list(set(hashes))
        found: set[str] = set()
        for start in range(0, len(wanted), 500):  # stay under SQLite's parameter limit
            part = wanted[start : start + 500]
            marks = ",".join("?" * len(part))
            rows = self.conn.execute(f"SELECT hash FROM chunks WHERE hash IN ({marks})", part)
            found.update(row[0] for row in rows)
        return found

    def add(self, chunks: Sequence[Chunk], first_id: int) -> None:
        """Insert `chunks` with ids first_id, first_id + 1, ... and commit."""
        rows = [
            (first_id + i, c.text_hash, c.text, c.source, c.start, c.end)
            for i, c in enumerate(chunks)
        ]
        with self.conn:
            self.conn.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?)", rows)

    def get(self, ids: Iterable[int]) -> dict[int, Chunk]:
        """Chunks by id (ids not stored are left out)."""
        wanted = sorted({int(i) for i in ids})
        out: dict[int, Chunk] = {}
        for start in range(0, len(wanted), 500):
            part = wanted[start : start + 500]
            marks = ",".join("?" * len(part))
            rows = self.conn.execute(
                "SELECT id, text, source, start_char, end_char FROM chunks "
                f"WHERE id IN ({marks})", part,
            )
            out.update({row[0]: Chunk(row[1], row[2], row[3], row[4]) for row in rows})
        return out

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()
