"""rag on tiny models: through `compare`, save → load, recall@k, the context budget, generation."""

from __future__ import annotations

import json

import pytest
import torch

from lmadapt.compare import compare
from lmadapt.data import DataSpec, load_task, load_train_eval
from lmadapt.index import Chunk, Embedder, VectorIndex
from lmadapt.methods import get_method
from lmadapt.methods.base import RunContext
from lmadapt.methods.rag import RagConfig
from lmadapt.models.load import ModelSpec
from lmadapt.run import load_run, tune
from lmadapt.train.config import TrainConfig
from tiny import toy_rows, write_jsonl

TRAIN = TrainConfig(epochs=1, batch_size=8, eval_each_epoch=False, max_eval_examples=8)
DOCS = ["the movie was good and lovely", "the film was bad and dull", "a plot is superb",
        "the acting was awful and poor", "a story is fine", "the movie is boring"]


@pytest.fixture(scope="module")
def tasks(toy_data):
    return load_train_eval(toy_data[0], toy_data[1], DataSpec())


@pytest.fixture(scope="module")
def doc_index(tiny_bert, tmp_path_factory) -> VectorIndex:
    """Six toy documents, one chunk each, sources doc0 … doc5."""
    chunks = [Chunk(text, f"docs/doc{i}.txt", 0, len(text)) for i, text in enumerate(DOCS)]
    return VectorIndex.build(chunks, Embedder(str(tiny_bert)), tmp_path_factory.mktemp("idx") / "toy.index")


def test_rag_runs_in_compare_with_train_only(tiny_llama, tiny_bert, tasks, tmp_path):
    train_task, eval_task = tasks
    cfg = RagConfig(rag_embedder=str(tiny_bert), rag_k=2)
    records = compare([("rag", None), ("zero-shot", None)], ModelSpec(model=str(tiny_llama)), train_task,
                      eval_task, {"rag": cfg, "zero-shot": get_method("zero-shot").config_class()},
                      TRAIN, tmp_path / "cmp")
    rag = next(r for r in records if r.method == "rag")
    assert 0.0 <= rag.score <= 1.0 and rag.trainable_params == 0
    assert -1.0 <= rag.extra["mean_retrieved_score"] <= 1.0 + 1e-6
    assert "recall@2" not in rag.extra  # no gold sources in the toy rows
    artifact = json.loads((tmp_path / "cmp" / "runs" / "rag" / "artifact" / "rag.json").read_text())
    assert artifact["corpus"] == "corpus.jsonl"


def test_rag_index_recall_and_save_load(tiny_llama, doc_index, tmp_path):
    rows = [{"text": DOCS[i], "label": "positive" if i in (0, 2, 4) else "negative",
             "source": f"doc{i}.txt"} for i in range(6)]
    task = load_task(write_jsonl(tmp_path / "qa.jsonl", rows))
    assert task.examples[3].gold_source == "doc3.txt"
    cfg = RagConfig(rag_index=str(doc_index.path), rag_k=2)
    spec = ModelSpec(model=str(tiny_llama))
    record = tune("rag", spec, task, task, cfg, TRAIN, tmp_path / "run")
    assert record.extra["recall@2"] == 1.0  # each query is its own document's text
    assert record.extra["recall_examples"] == 6
    loaded, _, _ = load_run(tmp_path / "run")
    fresh, _ = get_method("rag").fit(task, None, cfg, RunContext(spec, TRAIN, tmp_path))
    torch.testing.assert_close(loaded.scores(task.texts()), fresh.scores(task.texts()), rtol=0, atol=1e-5)
    assert loaded.predict(task.texts()) == fresh.predict(task.texts())


@pytest.mark.parametrize("budget", [24, 40, 400])
def test_context_budget_drops_lowest_ranked_first(tiny_llama, doc_index, tasks, tmp_path, budget):
    train_task, eval_task = tasks
    cfg = RagConfig(rag_index=str(doc_index.path), rag_k=4, rag_max_context_tokens=budget)
    adapted, _ = get_method("rag").fit(train_task, None, cfg, RunContext(ModelSpec(model=str(tiny_llama)),
                                                                        TRAIN, tmp_path))
    prompter = adapted.prompter
    for text in eval_task.texts()[:6]:
        prompt, kept = prompter.build(text)
        ranked = [hit.text for hit in prompter.retriever.hits([text])[0]]
        assert prompter.n_tokens(prompt) <= prompter.budget <= budget
        if kept:  # the best `kept` chunks, in rank order
            assert prompt.startswith("Context:\n" + "\n".join(ranked[:kept]) + "\n\n")
        if budget == 400:
            assert kept == 4


def test_rag_generation_task(tiny_llama, tmp_path):
    train = load_task(write_jsonl(tmp_path / "g.jsonl", toy_rows(12, seed=3, kind="generation")))
    cfg = RagConfig(rag_embedder="", rag_k=2)  # the LM itself embeds
    train_cfg = TrainConfig(epochs=1, max_new_tokens=3, eval_each_epoch=False)
    record = tune("rag", ModelSpec(model=str(tiny_llama)), train, train, cfg, train_cfg, tmp_path / "gen")
    assert record.metric == "exact_match" and record.extra["mean_chunks_in_prompt"] > 0
