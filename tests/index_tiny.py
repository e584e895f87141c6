"""Tiny random BERT embedders with a word-level vocab (no hub access) and small documents, shared
by the vector-index tests (test_index.py, test_index_safety.py; their fixtures are in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

WORDS = (
    "the a of and to in is it that was for on are with as his they be at one have this from or "
    "had by word but what some we can out other were all there when up use your how said an each "
    "she which do their time if will way about many then them write would like so these her long "
    "make thing see him two has look more day could go come did number sound no most people my"
).split()


def make_tiny_bert(folder: Path, hidden: int = 32, seed: int = 0) -> Path:
    """Save a random 2-layer BERT + word-level tokenizer in `folder`; returns the folder."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(vocab))  # transformers 5: `vocab`, not `vocab_file`
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(WORDS) + 5, hidden_size=hidden, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    BertModel(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def sentences(n: int, seed: int, length: int = 8) -> list[str]:
    """`n` distinct random sentences over the tiny vocab."""
    rng = np.random.default_rng(seed)
    out: list[str] = []
    while len(out) < n:
        text = " ".join(rng.choice(WORDS, size=length))
        if text not in out:
            out.append(text)
    return out


def make_pdf(text: str) -> bytes:
    """A minimal one-page PDF showing `text` in Helvetica (hand-written objects + xref)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = b"%PDF-1.4\n", []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref)
    return out


def write_docs(folder: Path, n_files: int = 3, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        (folder / f"doc{i}.txt").write_text(". ".join(sentences(6, seed + i, length=6)))
    return folder


def one_line(result) -> str:
    """The CLI result's only output line, an error."""
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())
