"""`lmadapt index build | add | query`: build, grow and search a vector index from the terminal."""

from __future__ import annotations

import json
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from lmadapt.errors import LmadaptError
from lmadapt.index.backends import INDEX_TYPES
from lmadapt.index.documents import SkippedInputWarning
from lmadapt.index.embed import DEFAULT_EMBEDDER, Embedder
from lmadapt.index.vector_index import (
    DEFAULT_CHUNK_TOKENS,
    DEFAULT_LOCK_TIMEOUT,
    DEFAULT_OVERLAP,
    META_FILE,
    VectorIndex,
    read_meta,
)

index_app = typer.Typer(
    help="Build, extend and search a vector index of documents (FAISS + SQLite).",
    no_args_is_help=True,
)
console = Console(stderr=True)
LOCK_TIMEOUT_HELP = "Seconds to wait while another process writes this index, then fail."


@contextmanager
def _user_facing() -> Iterator[None]:
    """Print skipped-input warnings as they happen and user errors as one line, exit code 1."""

    def show(message, category, *args, **kwargs) -> None:
        console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)

    with warnings.catch_warnings():
        warnings.simplefilter("always", SkippedInputWarning)
        warnings.showwarning = show
        try:
            yield
        except LmadaptError as err:
            console.print(f"[red]error:[/] {err}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None


@index_app.command()
def build(
    docs: Path = typer.Option(..., help="File or folder of .txt/.md/.jsonl/.pdf documents."),
    out: Path = typer.Option(..., help="Index folder to create (an existing index is replaced; "
                             "a non-empty folder that is not an index needs --overwrite)."),
    embedder: str = typer.Option(DEFAULT_EMBEDDER,
                                 help="Embedder: pull name, local model folder or hub id."),
    index_type: str = typer.Option(
        "flat", help=f"One of {', '.join(INDEX_TYPES)}: flat is exact (best up to ~100k chunks); "
        "hnsw is faster on large corpora; ivfpq uses ~20x less memory but is approximate."),
    chunk_tokens: int = typer.Option(
        None, help=f"Chunk length in embedder tokens [default: {DEFAULT_CHUNK_TOKENS}, or the "
        "embedder's limit if smaller]."),
    overlap: int = typer.Option(DEFAULT_OVERLAP, help="Tokens shared by consecutive chunks."),
    text_field: str = typer.Option("text", help="Field holding the text in .jsonl records."),
    batch_size: int = typer.Option(32, help="Chunks embedded per forward pass."),
    device: str = typer.Option(None, help="Torch device (default: cuda if available, else cpu)."),
    overwrite: bool = typer.Option(False, help="Write the index into a non-empty folder that is "
                                   "not an index (its files stay; the index files are added)."),
    lock_timeout: float = typer.Option(DEFAULT_LOCK_TIMEOUT, min=0, help=LOCK_TIMEOUT_HELP),
) -> None:
    """Chunk, embed and index documents into a new index folder."""
    from lmadapt.outdir import check_out

    with _user_facing():
        start = time.perf_counter()
        check_out(out, overwrite=overwrite, inputs=(docs, embedder), markers=(META_FILE,))
        model = Embedder(embedder, batch_size=batch_size, device=device)
        index = VectorIndex.build(docs, model, out, index_type=index_type,
                                  chunk_tokens=chunk_tokens, overlap=overlap,
                                  text_field=text_field, progress=True,
                                  lock_timeout=lock_timeout, overwrite=overwrite)
        console.print(f"indexed {len(index)} chunks into {out} ({index_type}, dim {model.dim}) "
                      f"in {time.perf_counter() - start:.1f} s", highlight=False)


@index_app.command()
def add(
    index: Path = typer.Argument(..., help="Index folder made by `lmadapt index build`."),
    docs: Path = typer.Option(..., help="File or folder of documents to add."),
    batch_size: int = typer.Option(32, help="Chunks embedded per forward pass."),
    device: str = typer.Option(None, help="Torch device (default: cuda if available, else cpu)."),
    lock_timeout: float = typer.Option(DEFAULT_LOCK_TIMEOUT, min=0, help=LOCK_TIMEOUT_HELP),
) -> None:
    """Add documents to an index; chunks already stored (same text) are not embedded again."""
    with _user_facing():
        stored = read_meta(index)["embedder"]
        opened = VectorIndex.open(index, Embedder(
            stored["ref"], pooling=stored["pooling"], normalize=stored["normalize"],
            max_tokens=stored["max_tokens"], batch_size=batch_size, device=device))
        added = opened.add(docs, progress=True, lock_timeout=lock_timeout)
        console.print(f"added {added} new chunks to {index} (now {len(opened)})",
                      highlight=False)


def _one_line(text: str, width: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


@index_app.command()
def query(
    index: Path = typer.Argument(..., help="Index folder made by `lmadapt index build`."),
    question: str = typer.Argument(..., help="The text to search for."),
    k: int = typer.Option(5, "-k", "--k", min=1, help="Number of chunks to return."),
    as_json: bool = typer.Option(False, "--json",
                                 help='Print a JSON list of {"source", "score", "text"}.'),
    embedder: str = typer.Option(None, help="Embedder to use (default: the one stored in the "
                                            "index; a different one is an error)."),
) -> None:
    """Print the chunks most similar to QUESTION, best first."""
    with _user_facing():
        opened = VectorIndex.open(index, Embedder(embedder) if embedder else None)
        hits = opened.search([question], k=k)[0]
    if as_json:
        rows = [{"source": h.source, "score": round(h.score, 6), "text": h.text} for h in hits]
        sys.stdout.write(json.dumps(rows, ensure_ascii=False) + "\n")
        return
    table = Table(title=f"{len(hits)} best chunks for: {_one_line(question, 60)}")
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("source", overflow="fold")
    table.add_column("text")
    for rank, hit in enumerate(hits, start=1):
        table.add_row(str(rank), f"{hit.score:.3f}", hit.source, _one_line(hit.text))
    Console().print(table)
