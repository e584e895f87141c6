"""Vector index hygiene and locks (issue 11, classes 8 and 2): tampered or damaged metadata,
writes killed half-way, concurrent adds, a second writer waiting on the lock.

Embedders are tiny random BERTs built from a config with a word-level vocab (tests/index_tiny.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from index_tiny import listing, one_line, sentences, write_docs
from lmadapt.errors import LmadaptError
from lmadapt.index import Embedder, VectorIndex, read_meta
from lmadapt.index.cli import index_app

# ---- index hygiene and locks (issue 11, classes 8 and 2) --------------------------------------

@pytest.mark.parametrize("generation", ["../../outside", "a/b", "..", "/etc/passwd", "", 123,
                                        None, "ABCDEF012345", "0123456789ab/"])
def test_tampered_generation_is_one_line(tmp_path, embedder, generation):
    path = tmp_path / "idx"
    VectorIndex.build(sentences(5, seed=20), embedder, path)
    meta = json.loads((path / "meta.json").read_text())
    meta["generation"] = generation
    (path / "meta.json").write_text(json.dumps(meta))
    before = listing(path)
    with pytest.raises(LmadaptError, match=r"meta\.json: generation .* is not 12 hex digits") as info:
        VectorIndex.open(path)
    assert "\n" not in str(info.value)
    with pytest.raises(LmadaptError, match="is not 12 hex digits"):  # no write follows it either
        VectorIndex.build(sentences(5, seed=21), embedder, path)
    assert listing(path) == before and listing(tmp_path) == ["idx"]
    result = CliRunner().invoke(index_app, ["query", str(path), "hi"])
    assert result.exit_code == 1 and "is not 12 hex digits" in one_line(result)


def test_damaged_manifest_fields_are_one_line(tmp_path, embedder):
    path = tmp_path / "idx"
    VectorIndex.build(sentences(5, seed=22), embedder, path)
    good = json.loads((path / "meta.json").read_text())
    for change, pattern in (({"dim": None}, "'dim' is missing or not a int"),
                            ({"embedder": "minilm"}, "'embedder' is missing or not a dict"),
                            ({"search": {"bogus": 1}}, "'search' has unknown keys"),
                            ({"format": "other"}, "not an lmadapt index")):
        (path / "meta.json").write_text(json.dumps({**good, **change}))
        with pytest.raises(LmadaptError, match=pattern) as info:
            VectorIndex.open(path)
        assert "\n" not in str(info.value)
    (path / "meta.json").write_text("[1, 2]")
    with pytest.raises(LmadaptError, match="not an lmadapt index"):
        VectorIndex.open(path)


KILLED_WRITES = r"""
import json, os, sys
from lmadapt.index import Embedder, VectorIndex
from lmadapt.index import vector_index as v

model, index, fresh, texts = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])

def die(self, chunks, first_id):  # the power goes out half-way through writing the chunk table
    self.conn.execute("BEGIN")
    self.conn.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?)", [
        (first_id + i, c.text_hash, c.text, c.source, c.start, c.end) for i, c in enumerate(chunks)])
    os._exit(9)  # no cleanup code runs, as after kill -9

v.ChunkStore.add = die
child = os.fork()  # nothing ran in torch yet, so forking is safe
if child == 0:
    VectorIndex.open(index, Embedder(model)).add(texts)  # killed in-place add
os.waitpid(child, 0)
VectorIndex.build(texts, Embedder(model), fresh)  # killed fresh build
"""


def test_orphans_of_killed_writes_are_cleaned_on_next_write(tmp_path, models, embedder):

    path, fresh = tmp_path / "idx", tmp_path / "fresh"
    texts = sentences(6, seed=23)
    VectorIndex.build(texts, embedder, path)
    good = set(listing(path))
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / ".fresh.tmp-notmine1").mkdir()  # looks like a temp folder, but holds a user's file
    (tmp_path / ".fresh.tmp-notmine1" / "mine.txt").write_text("mine")
    extra = sentences(4, seed=24)
    result = subprocess.run([sys.executable, "-c", KILLED_WRITES, str(models["a"]), str(path),
                             str(fresh), json.dumps(extra)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 9, result.stderr
    orphans = set(listing(path)) - good
    assert {Path(n).suffix for n in orphans} == {".faiss", ".sqlite", ".sqlite-journal"}, orphans
    leftover_tmp = [n for n in listing(tmp_path) if n.startswith(".fresh.tmp-") and n != ".fresh.tmp-notmine1"]
    assert len(leftover_tmp) == 1 and not fresh.exists()
    (path / ".meta.json.tmp-0123abcd").write_text("{")  # a killed manifest swap

    index = VectorIndex.open(path, embedder)  # the old index is intact and queryable
    assert len(index) == 6 and index.search([texts[2]], k=1)[0][0].text == texts[2]
    assert index.add(texts) == 0  # the next write (even one that adds nothing) cleans up
    assert set(listing(path)) == good
    VectorIndex.build(extra, embedder, fresh)
    assert listing(tmp_path) == [".fresh.tmp-notmine1", "fresh", "idx", "notes.txt"]
    assert (tmp_path / ".fresh.tmp-notmine1" / "mine.txt").read_text() == "mine"
    assert index.add(extra) == 4 and len(list(path.glob("*.faiss"))) == 1


def test_concurrent_adds_lose_no_document(tmp_path, models, embedder):
    import threading

    path = tmp_path / "idx"
    VectorIndex.build(sentences(5, seed=25), embedder, path)
    first, second = VectorIndex.open(path, embedder), VectorIndex.open(path, Embedder(str(models["a"])))
    batch_a, batch_b = sentences(6, seed=26), sentences(7, seed=27)
    holding, errors = threading.Event(), []
    slow = Embedder(str(models["a"]))
    real_encode = slow.encode

    def slow_encode(texts, progress=False):  # first writer: holds the lock while it embeds
        holding.set()
        threading.Event().wait(1.0)
        return real_encode(texts, progress=progress)

    slow.encode = slow_encode
    first._embedder = slow

    def run(index, batch):
        try:
            index.add(batch, lock_timeout=30)
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    a = threading.Thread(target=run, args=(first, batch_a))
    a.start()
    assert holding.wait(30), errors
    b = threading.Thread(target=run, args=(second, batch_b))  # opened before a's add landed
    b.start()
    a.join(60)
    b.join(60)
    assert not errors
    final = VectorIndex.open(path, embedder)
    assert len(final) == 5 + 6 + 7 == read_meta(path)["count"]
    stored = {c.text for c in final.store.get(range(len(final))).values()}
    assert set(batch_a) | set(batch_b) <= stored
    assert len(list(path.glob("*.faiss"))) == 1


HOLD_LOCK = r"""
import sys, time
from lmadapt.outdir import locked
with locked(sys.argv[1]):
    print("holding", flush=True)
    time.sleep(60)
"""


def test_second_writer_waits_then_fails_naming_holder_pid(tmp_path, models):

    runner = CliRunner()
    docs, path = write_docs(tmp_path / "docs"), tmp_path / "idx"
    result = runner.invoke(index_app, ["build", "--docs", str(docs), "--out", str(path),
                                       "--embedder", str(models["a"]), "--chunk-tokens", "16",
                                       "--overlap", "4"])
    assert result.exit_code == 0, result.output
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        more = write_docs(tmp_path / "more", n_files=1, seed=60)
        start = time.monotonic()
        result = runner.invoke(index_app, ["add", str(path), "--docs", str(more), "--lock-timeout", "1"])
        waited = time.monotonic() - start
        assert result.exit_code == 1
        line = one_line(result)
        assert f"(pid {holder.pid})" in line and "after waiting 1 s" in line
        assert waited >= 1.0
        result = runner.invoke(index_app, ["build", "--docs", str(more), "--out", str(path),
                                           "--embedder", str(models["a"]), "--lock-timeout", "0"])
        assert result.exit_code == 1 and f"(pid {holder.pid})" in one_line(result)
    finally:
        holder.kill()
        holder.wait()
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before  # nothing half-written
    result = runner.invoke(index_app, ["add", str(path), "--docs", str(more)])  # the lock is free again
    assert result.exit_code == 0 and "added" in result.output


