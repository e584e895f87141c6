"""Read documents (.txt, .md, .jsonl, .pdf) and cut them into token windows with character offsets.

Files that cannot be used (empty, not UTF-8, unreadable PDF, bad JSONL line) are skipped with a
`SkippedInputWarning` that names them; the rest of the corpus is still indexed.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lmadapt.errors import LmadaptError

TEXT_SUFFIXES = (".txt", ".md")
SUFFIXES = (*TEXT_SUFFIXES, ".jsonl", ".pdf")


class SkippedInputWarning(UserWarning):
    """A document (or part of one) was skipped; the message names it and says why."""


@dataclass(frozen=True)
class Document:
    """One text to index; `source` names where it came from (file, file:line or file#page=N)."""

    text: str
    source: str


@dataclass(frozen=True)
class Chunk:
    """A window of a document: its text, source and [start, end) character offsets."""

    text: str
    source: str
    start: int
    end: int

    @property
    def text_hash(self) -> str:
        """sha256 of the text: identical chunks are stored once."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def _skip(path: Path | str, why: str) -> None:
    warnings.warn(f"skipping {path}: {why}", SkippedInputWarning, stacklevel=3)


def find_files(docs: Path) -> list[Path]:
    """The supported files at `docs` (a file, or a folder searched recursively), sorted."""
    if not docs.exists():
        raise LmadaptError(f"documents path {docs} does not exist; pass a file or folder to --docs")
    if docs.is_file():
        if docs.suffix.lower() not in SUFFIXES:
            raise LmadaptError(
                f"{docs} is not a supported document; use one of: {', '.join(SUFFIXES)}"
            )
        return [docs]
    return sorted(
        p for p in docs.rglob("*")
        if p.is_file() and p.suffix.lower() in SUFFIXES and not p.name.startswith(".")
    )


def _read_text(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        _skip(path, f"not valid UTF-8 (byte {err.start}); re-save it as UTF-8")
        return None


def _jsonl_documents(path: Path, raw: str, text_field: str) -> Iterator[Document]:
    for line_no, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            _skip(f"{path}:{line_no}", "not valid JSON")
            continue
        text = record.get(text_field) if isinstance(record, dict) else None
        if not isinstance(text, str) or not text.strip():
            _skip(f"{path}:{line_no}", f"no non-empty string field {text_field!r}")
            continue
        yield Document(text, f"{path}:{line_no}")


def _pdf_documents(path: Path) -> Iterator[Document]:
    try:
        from pypdf import PdfReader
    except ImportError:
        _skip(path, "reading PDFs needs pypdf (pip install pypdf)")
        return
    try:
        pages = [page.extract_text() or "" for page in PdfReader(path).pages]
    except Exception as err:  # pypdf raises many types for damaged/encrypted files
        _skip(path, f"unreadable PDF ({type(err).__name__})")
        return
    if not any(page.strip() for page in pages):
        _skip(path, "no extractable text (scanned PDF?)")
    for page_no, text in enumerate(pages, start=1):
        if text.strip():
            yield Document(text, f"{path}#page={page_no}")


def read_documents(docs: Path | str, text_field: str = "text") -> Iterator[Document]:
    """Yield the documents under `docs`; JSONL gives one per line (its `text_field`), PDF per page."""
    for path in find_files(Path(docs)):
        if path.suffix.lower() == ".pdf":
            yield from _pdf_documents(path)
            continue
        raw = _read_text(path)
        if raw is None:
            continue
        if not raw.strip():
            _skip(path, "empty file")
        elif path.suffix.lower() == ".jsonl":
            yield from _jsonl_documents(path, raw, text_field)
        else:
            yield Document(raw, str(path))


def chunk_document(doc: Document, tokenizer, chunk_tokens: int, overlap: int) -> list[Chunk]:
    """Cut `doc` into windows of `chunk_tokens` tokens, consecutive windows sharing `overlap`.

    Windows are measured in the embedder's tokens (so none is truncated at embedding time) and
    mapped back to character offsets, so a chunk's text is an exact slice of the document.
    """
    enc = tokenizer(doc.text, add_special_tokens=False, return_offsets_mapping=True,
                    verbose=False)
    offsets = enc["offset_mapping"]  # (T, 2) character span of each token
    if not offsets:
        return []
    step = chunk_tokens - overlap
    chunks = []
    for first in range(0, len(offsets), step):
        last = min(first + chunk_tokens, len(offsets)) - 1
        start, end = offsets[first][0], offsets[last][1]
        text = doc.text[start:end]
        if text.strip():
            chunks.append(Chunk(text, doc.source, start, end))
        if last == len(offsets) - 1:
            break
    return chunks


def check_chunk_params(chunk_tokens: int, overlap: int, max_tokens: int) -> None:
    """Raise a one-line error unless 0 <= overlap < chunk_tokens <= the embedder's content limit."""
    limit = max_tokens - 2  # room for [CLS] and [SEP]
    if not 0 < chunk_tokens <= limit:
        raise LmadaptError(
            f"--chunk-tokens {chunk_tokens} must be between 1 and {limit} (the embedder's limit)"
        )
    if not 0 <= overlap < chunk_tokens:
        raise LmadaptError(f"--overlap {overlap} must be >= 0 and smaller than --chunk-tokens")


def chunk_corpus(docs: Path | str, tokenizer, chunk_tokens: int, overlap: int,
                 text_field: str = "text") -> list[Chunk]:
    """All chunks of all documents under `docs`, in file order, identical texts kept once."""
    seen: set[str] = set()
    chunks = []
    for doc in read_documents(docs, text_field):
        for chunk in chunk_document(doc, tokenizer, chunk_tokens, overlap):
            if chunk.text_hash not in seen:
                seen.add(chunk.text_hash)
                chunks.append(chunk)
    return chunks
