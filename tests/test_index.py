"""Vector index: exact search, dedup on add, crash safety, embedder checks, bad input, CLI.

Embedders are tiny random BERTs built from a config with a word-level vocab (no hub access;
tests/index_tiny.py). Index hygiene and locks: test_index_safety.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from index_tiny import listing, make_pdf, one_line, sentences, write_docs
from lmadapt.errors import LmadaptError
from lmadapt.index import (
    Chunk,
    Embedder,
    MemoryIndex,
    SkippedInputWarning,
    VectorIndex,
    nearest,
    read_meta,
)
from lmadapt.index import vector_index as vector_index_module
from lmadapt.index.backends import build_index
from lmadapt.index.cli import index_app
from lmadapt.index.documents import Document, chunk_document


def test_exact_index_returns_true_nearest_neighbours(tmp_path, embedder):
    texts = sentences(40, seed=1)
    index = VectorIndex.build(texts, embedder, tmp_path / "idx", index_type="flat")
    queries = sentences(5, seed=2)
    hits = index.search(queries, k=5)
    # brute force: cosine = dot of unit vectors, (Q, N)
    vectors, query_vecs = embedder.encode(texts), embedder.encode(queries)
    scores = query_vecs @ vectors.T
    for row, row_hits in zip(scores, hits, strict=True):
        expected = np.argsort(-row)[:5]
        assert [h.chunk_id for h in row_hits] == expected.tolist()
        assert [h.text for h in row_hits] == [texts[i] for i in expected]
        np.testing.assert_allclose([h.score for h in row_hits], row[expected], atol=1e-5)
    # the in-memory variant agrees
    mem_scores, mem_ids = MemoryIndex(vectors).nearest(query_vecs, 5)
    assert mem_ids.tolist() == [[h.chunk_id for h in r] for r in hits]
    np.testing.assert_allclose(mem_scores, nearest(query_vecs, vectors, 5)[0])
    mem_hits = MemoryIndex.from_texts(texts, embedder).search(queries, k=5)
    assert [[h.text for h in r] for r in mem_hits] == [[h.text for h in r] for r in hits]


def test_reopened_index_searches_the_same(tmp_path, embedder):
    texts = sentences(20, seed=3)
    built = VectorIndex.build(texts, embedder, tmp_path / "idx", index_type="hnsw")
    reopened = VectorIndex.open(tmp_path / "idx")  # loads the stored embedder itself
    query = sentences(1, seed=4)
    assert [h.chunk_id for h in built.search(query, 3)[0]] == [
        h.chunk_id for h in reopened.search(query, 3)[0]
    ]
    meta = read_meta(tmp_path / "idx")
    assert (meta["index_type"], meta["dim"], meta["count"]) == ("hnsw", 32, 20)


def test_ivfpq_needs_enough_vectors_and_then_works(tmp_path, embedder):
    with pytest.raises(LmadaptError, match="--index-type flat"):
        VectorIndex.build(sentences(10, seed=5), embedder, tmp_path / "idx", index_type="ivfpq")
    vectors = np.random.default_rng(0).standard_normal((600, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = build_index("ivfpq", vectors)
    _, ids = index.search(vectors[:5], 1)
    assert ids.shape == (5, 1) and (ids >= 0).all()


def test_chunks_are_exact_slices_with_overlap(embedder):
    doc = Document(" ".join(sentences(1, seed=6, length=50)), "d.txt")
    chunks = chunk_document(doc, embedder.tokenizer, chunk_tokens=12, overlap=4)
    assert len(chunks) == 6  # windows start at tokens 0, 8, 16, 24, 32, 40
    for chunk in chunks:
        assert doc.text[chunk.start : chunk.end] == chunk.text
        assert len(embedder.tokenizer(chunk.text, add_special_tokens=False)["input_ids"]) <= 12
    assert chunks[1].start < chunks[0].end  # consecutive windows overlap
    assert chunks[-1].end == len(doc.text)


def test_add_is_idempotent_and_dedups(tmp_path, embedder):
    docs = write_docs(tmp_path / "docs")
    (tmp_path / "docs" / "copy.txt").write_text((docs / "doc0.txt").read_text())  # duplicate
    path = tmp_path / "idx"
    index = VectorIndex.build(docs, embedder, path, chunk_tokens=16, overlap=4)
    size = len(index)
    assert size == read_meta(path)["count"]
    assert index.add(docs) == 0 and len(index) == size
    assert len(VectorIndex.open(path)) == size

    extra = write_docs(tmp_path / "more", n_files=1, seed=50)
    added = index.add(extra)
    assert added > 0 and len(index) == size + added
    reopened = VectorIndex.open(path, embedder)
    new_text = reopened.store.get([size])[size].text
    assert reopened.search([new_text], k=1)[0][0].chunk_id == size
    assert len(list(path.glob("*.faiss"))) == 1  # old generation cleaned up


def test_interrupted_rebuild_and_add_leave_old_index(tmp_path, embedder, monkeypatch):
    path = tmp_path / "idx"
    texts = sentences(10, seed=7)
    VectorIndex.build(texts, embedder, path)
    before = sorted(p.name for p in path.iterdir())

    def crash(*args, **kwargs):
        raise RuntimeError("power cut")

    monkeypatch.setattr(vector_index_module.ChunkStore, "add", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        VectorIndex.build(sentences(10, seed=8), embedder, path)
    with pytest.raises(RuntimeError, match="power cut"):
        VectorIndex.open(path, embedder).add(sentences(3, seed=9))
    with pytest.raises(RuntimeError, match="power cut"):
        VectorIndex.build(texts, embedder, tmp_path / "fresh")
    monkeypatch.undo()

    assert sorted(p.name for p in path.iterdir()) == before
    assert not (tmp_path / "fresh").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]  # no temp folders left
    index = VectorIndex.open(path, embedder)
    assert len(index) == 10
    assert index.search([texts[3]], k=1)[0][0].text == texts[3]


def test_other_embedder_or_dimension_is_one_clear_error(tmp_path, models, embedder):
    path = tmp_path / "idx"
    VectorIndex.build(sentences(10, seed=10), embedder, path)
    with pytest.raises(LmadaptError, match="built with embedder .* different weights"):
        VectorIndex.open(path, Embedder(str(models["b"])))
    with pytest.raises(LmadaptError, match="dimension 32 vs 16"):
        VectorIndex.open(path, Embedder(str(models["small"])))
    with pytest.raises(LmadaptError, match="dimension 16 but index"):
        VectorIndex.open(path, embedder).search_vectors(np.zeros((1, 16), np.float32))


def test_missing_or_foreign_index_is_one_clear_error(tmp_path, embedder):
    with pytest.raises(LmadaptError, match="no index at"):
        VectorIndex.open(tmp_path / "nope")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("mine")
    with pytest.raises(LmadaptError, match="not an lmadapt index"):
        VectorIndex.open(tmp_path / "junk")
    with pytest.raises(LmadaptError, match="not an lmadapt index"):
        VectorIndex.build(sentences(3, seed=11), embedder, tmp_path / "junk")
    assert (tmp_path / "junk" / "notes.txt").read_text() == "mine"


def test_empty_and_non_utf8_files_are_skipped_with_warning(tmp_path, embedder):
    docs = write_docs(tmp_path / "docs", n_files=1)
    (docs / "empty.md").write_text("  \n")
    (docs / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    (docs / "rows.jsonl").write_text('{"text": "one more day"}\n{broken\n')
    (docs / "paper.pdf").write_bytes(make_pdf("the long day of many people"))
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    with pytest.warns(SkippedInputWarning) as record:
        index = VectorIndex.build(docs, embedder, tmp_path / "idx", chunk_tokens=16, overlap=4)
    messages = " | ".join(str(w.message) for w in record)
    assert "empty.md: empty file" in messages
    assert "latin1.txt: not valid UTF-8" in messages
    assert "rows.jsonl:2: not valid JSON" in messages
    assert "broken.pdf: unreadable PDF" in messages
    assert {h.source for h in index.search(["one more day"], k=50)[0]} >= {
        str(docs / "doc0.txt"), f"{docs / 'rows.jsonl'}:1", f"{docs / 'paper.pdf'}#page=1"
    }

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.txt").write_text("")
    with pytest.warns(SkippedInputWarning), pytest.raises(LmadaptError, match="no text to index"):
        VectorIndex.build(bad, embedder, tmp_path / "idx2")


def test_cli_build_add_query_json(tmp_path, models):
    runner = CliRunner()
    docs = write_docs(tmp_path / "docs")
    (docs / "empty.txt").write_text("")
    out = tmp_path / "idx"
    result = runner.invoke(index_app, ["build", "--docs", str(docs), "--out", str(out),
                                       "--embedder", str(models["a"]), "--chunk-tokens", "16",
                                       "--overlap", "4"])
    assert result.exit_code == 0, result.output
    assert "skipping" in result.output and "empty.txt" in result.output

    question = (docs / "doc1.txt").read_text()[:40]
    result = runner.invoke(index_app, ["query", str(out), question, "-k", "3", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 3 and set(rows[0]) == {"source", "score", "text"}
    assert rows[0]["score"] >= rows[1]["score"] >= rows[2]["score"]

    result = runner.invoke(index_app, ["query", str(out), question])
    assert result.exit_code == 0 and "score" in result.stdout

    result = runner.invoke(index_app, ["add", str(out), "--docs", str(docs)])
    assert result.exit_code == 0 and "added 0 new chunks" in result.output

    for args in (["query", str(tmp_path / "missing"), "hi"],
                 ["query", str(out), "hi", "--embedder", str(models["small"])]):
        result = runner.invoke(index_app, args)
        assert result.exit_code == 1
        assert result.output.strip().startswith("error:")
        assert len(result.output.strip().splitlines()) == 1


def test_build_accepts_chunks_with_provenance(tmp_path, embedder):
    chunks = [Chunk("one more day", "notes.md", 10, 22), Chunk("one more day", "x.md", 0, 12),
              Chunk("long way", "notes.md", 30, 38)]
    index = VectorIndex.build(chunks, embedder, tmp_path / "idx")
    assert len(index) == 2  # identical texts stored once
    hit = index.search(["one more day"], k=1)[0][0]
    assert (hit.source, hit.start, hit.end) == ("notes.md", 10, 22)


def test_build_out_refuses_user_folders(tmp_path, models, monkeypatch):
    runner = CliRunner()
    docs = write_docs(tmp_path / "docs")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("mine")

    def build(out, *extra):
        return runner.invoke(index_app, ["build", "--docs", str(docs), "--out", str(out),
                                         "--embedder", str(models["a"]), "--chunk-tokens", "16",
                                         "--overlap", "4", *extra])

    result = build(mine)
    assert result.exit_code == 1 and "lmadapt did not write" in one_line(result)
    assert listing(mine) == ["thesis.txt"]
    for target in (docs, tmp_path):  # the input or a folder holding it
        result = build(target, "--overwrite")
        assert result.exit_code == 1 and "holds the input" in one_line(result)
    result = build(docs / "doc0.txt", "--overwrite")
    assert result.exit_code == 1 and "is a file, not a folder" in one_line(result)
    monkeypatch.chdir(docs)
    for target in (".", ".."):
        result = build(target, "--overwrite")
        assert result.exit_code == 1 and "working directory" in one_line(result)
    monkeypatch.chdir(tmp_path)
    assert sorted(p.name for p in docs.iterdir()) == ["doc0.txt", "doc1.txt", "doc2.txt"]

    result = build(mine, "--overwrite")  # the index files go beside the user's, which stay
    assert result.exit_code == 0, result.output
    assert (mine / "thesis.txt").read_text() == "mine" and read_meta(mine)["count"] > 0
    result = build(mine)  # an index folder is lmadapt's: rebuilt without --overwrite
    assert result.exit_code == 0, result.output
    assert (mine / "thesis.txt").read_text() == "mine"
    assert len(list(mine.glob("*.faiss"))) == 1

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "meta.json").write_text('{"author": "me"}')
    result = build(theirs, "--overwrite")  # a meta.json that is not an index's is never replaced
    assert result.exit_code == 1 and "not an lmadapt index" in one_line(result)
    assert listing(theirs) == ["meta.json"] and "author" in (theirs / "meta.json").read_text()


def test_folder_name_with_uri_characters(tmp_path, embedder):
    path = tmp_path / "my #1 index?v=2"
    texts = sentences(5, seed=28)
    VectorIndex.build(texts, embedder, path)
    assert VectorIndex.open(path, embedder).search([texts[1]], k=1)[0][0].text == texts[1]
