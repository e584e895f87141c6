"""rag: retrieve the top-k chunks for each input and put them before the prompt.

    prompt = "Context:\\n" + chunk_1 + "\\n" + ... + chunk_k + "\\n\\n" + task.prompt(text)

Chat data: the same context block opens the last user turn (before its own content), and the
conversation is rendered with the chat template.

Chunks come from an index built by `lmadapt index build` (`rag_index`), or, when none is given,
from an in-memory index over the training examples (keyed by their input text, holding
input + target), which makes `rag` a retrieval-augmented few-shot prompt. The chunks are fitted
into the token budget by dropping the lowest-ranked chunk first. Scoring is the TaskModel's own:
label log-likelihood for classification, greedy generation otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lmadapt.data.chat import prompt_messages
from lmadapt.data.task import Task
from lmadapt.errors import LmadaptError
from lmadapt.index import Embedder, Hit, MemoryIndex, VectorIndex
from lmadapt.index.embed import resolve_embedder
from lmadapt.methods.base import Adapted, RunContext, TaskModelAdapted, fitted, task_model_for
from lmadapt.methods.rag.config import RagConfig
from lmadapt.models.chat import render
from lmadapt.models.task_model import PromptBuilder, TaskModel, context_window
from lmadapt.utils import atomic_write_text

ARTIFACT = "rag.json"
CORPUS = "corpus.jsonl"


class Retriever:
    """Top-k search over a VectorIndex or MemoryIndex, cached per query text."""

    def __init__(self, index: VectorIndex | MemoryIndex, k: int) -> None:
        self.index, self.k = index, k
        self._cache: dict[str, list[Hit]] = {}

    def hits(self, texts: Sequence[str]) -> list[list[Hit]]:
        """The k best chunks for each text, best first (one batched search for unseen texts)."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            self._cache.update(zip(missing, self.index.search(missing, self.k), strict=True))
        return [self._cache[t] for t in texts]

    @property
    def embedder(self) -> Embedder:
        return self.index.embedder


class ContextPrompter(PromptBuilder):
    """Builds `Context: <chunks>` + prompt(text) within a token budget (a TaskModel.prompt_builder)."""

    def __init__(self, tm: TaskModel, retriever: Retriever, max_tokens: int) -> None:
        self.tm, self.retriever = tm, retriever
        task = tm.task
        if task.kind == "classification":  # room for the longest label after the prompt
            reserve = 1 + max(len(tm.tokenizer(task.label_prefix + label, add_special_tokens=False)["input_ids"])
                              for label in task.labels)
        else:
            reserve = tm.max_new_tokens
        window = context_window(tm.model, tm.tokenizer)
        self.budget = max(8, min(max_tokens, window - reserve))  # prompt tokens, special tokens included
        tm.max_length = max(tm.max_length, min(window, self.budget + reserve))  # never cut our prompt

    def n_tokens(self, prompt: str) -> int:
        return len(self.tm.tokenizer(prompt)["input_ids"])

    def build(self, text: str) -> tuple[str, int]:
        """The prompt for one input and how many retrieved chunks it kept (chat data: the
        rendered conversation, the context in its last user turn)."""
        if self.tm.chat_template is not None:
            messages, kept = self.chat_messages(text, prompt_messages(text))
            return render(self.tm.tokenizer, self.tm.chat_template, messages, generation_prompt=True), kept
        query = self.tm.task.prompt(text)
        chunks = [hit.text for hit in self.retriever.hits([text])[0]]
        while chunks:
            prompt = "Context:\n" + "\n".join(chunks) + "\n\n" + query
            if self.n_tokens(prompt) <= self.budget:
                return prompt, len(chunks)
            chunks.pop()  # drop the lowest-ranked chunk first
        return query, 0

    def __call__(self, text: str) -> str:
        return self.build(text)[0]

    def chat_messages(self, text: str, messages: list[dict[str, str]]) -> tuple[list[dict[str, str]], int]:
        """The conversation with `Context: <chunks>` opening its last turn, and the chunks kept."""
        chunks = [hit.text for hit in self.retriever.hits([text])[0]]
        last = messages[-1]
        while chunks:
            content = "Context:\n" + "\n".join(chunks) + "\n\n" + last["content"]
            shown = [*messages[:-1], {**last, "content": content}]
            rendered = render(self.tm.tokenizer, self.tm.chat_template, shown, generation_prompt=True)
            if len(self.tm.tokenizer(rendered, add_special_tokens=False)["input_ids"]) <= self.budget:
                return shown, len(chunks)
            chunks.pop()  # drop the lowest-ranked chunk first
        return messages, 0

    def messages(self, text: str, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        return self.chat_messages(text, messages)[0]


def source_matches(source: str, gold: str) -> bool:
    """A retrieved chunk's source counts as the gold one when equal or ending in '/' + gold."""
    return source == gold or source.endswith("/" + gold)


@dataclass
class RagAdapted(Adapted):
    """A TaskModel whose prompts carry retrieved context; reports retrieval figures."""

    inner: TaskModelAdapted
    prompter: ContextPrompter
    artifact: dict = field(repr=False, default_factory=dict)  # what rag.json holds
    corpus: list[dict] = field(repr=False, default_factory=list)  # in-memory index rows
    trainable_params: int = 0
    total_params: int = 0

    @property
    def tm(self) -> TaskModel:
        return self.inner.tm

    def predict(self, texts: list[str], batch_size: int = 16) -> list[str]:
        self.prompter.retriever.hits(texts)  # batch the searches
        return self.inner.predict(texts, batch_size)

    def scores(self, texts: list[str]) -> torch.Tensor:
        self.prompter.retriever.hits(texts)
        return self.inner.scores(texts)

    def figures(self, task: Task) -> dict:
        """Mean retrieved-chunk score, chunks kept in the prompt and, with gold sources and an
        index (not the in-memory training corpus), recall@k."""
        retriever = self.prompter.retriever
        hits = retriever.hits(task.texts())
        out = {"rag_k": retriever.k,
               "mean_retrieved_score": float(np.mean([h.score for row in hits for h in row] or [0.0])),
               "mean_chunks_in_prompt": float(np.mean([self.prompter.build(t)[1] for t in task.texts()]))}
        gold = [(ex.gold_source, row) for ex, row in zip(task.examples, hits, strict=True) if ex.gold_source]
        if gold and self.artifact.get("index"):  # gold sources name documents of an index
            found = [any(source_matches(h.source, g) for h in row) for g, row in gold]
            out[f"recall@{retriever.k}"] = float(np.mean(found))
            out["recall_examples"] = len(gold)
        return out

    def save(self, artifact_dir: Path) -> None:
        artifact_dir.mkdir(parents=True, exist_ok=True)
        if self.corpus:
            atomic_write_text(artifact_dir / CORPUS, "".join(json.dumps(r, ensure_ascii=False) + "\n"
                                                             for r in self.corpus))
        atomic_write_text(artifact_dir / ARTIFACT, json.dumps(self.artifact, indent=2))


def training_corpus(task: Task) -> list[dict]:
    """Rows of the in-memory index: key = input text (embedded), text = input + target (shown;
    chat data: the prompt's user turns, then the answer)."""
    sep = task.label_prefix if task.kind == "classification" else ""

    def shown(text: str) -> str:
        if not task.chat:
            return task.prompt(text)
        return "\n".join(m["content"] for m in prompt_messages(text) if m["role"] != "system") + "\n"

    return [{"key": ex.text, "text": f"{shown(ex.text)}{sep}{ex.target}", "source": f"train:{i}"}
            for i, ex in enumerate(task.examples)]


def memory_index(corpus: list[dict], embedder_ref: str) -> MemoryIndex:
    embedder = Embedder(embedder_ref)
    vectors = embedder.encode([r["key"] for r in corpus], progress=True)  # (N, D)
    return MemoryIndex(vectors, [r["text"] for r in corpus], [r["source"] for r in corpus], embedder)


def open_index(path: str) -> VectorIndex:
    folder = Path(path).expanduser().resolve()
    if not folder.is_dir():
        raise LmadaptError(f"rag_index {path!r} does not exist; build one with `lmadapt index build`")
    return VectorIndex.open(folder)


class Rag:
    name = "rag"
    config_class = RagConfig
    model_kinds = ("causal", "seq2seq")
    task_kinds = ("classification", "generation")
    trains = False
    summary = "top-k retrieved chunks (an index, or the training set) before each input"

    def _adapt(self, task: Task, cfg: RagConfig, ctx: RunContext, artifact: dict,
               corpus: list[dict]) -> RagAdapted:
        if artifact.get("index"):
            index: VectorIndex | MemoryIndex = open_index(artifact["index"])
        else:
            index = memory_index(corpus, artifact["embedder"])
        tm = task_model_for(task, ctx, need=self.model_kinds, method=self.name)
        retriever = Retriever(index, cfg.rag_k)
        tm.prompt_builder = prompter = ContextPrompter(tm, retriever, cfg.rag_max_context_tokens)
        inner = fitted(tm)
        embedder_params = sum(p.numel() for p in retriever.embedder.model.parameters())
        return RagAdapted(inner, prompter, artifact, corpus, trainable_params=0,
                          total_params=inner.total_params + embedder_params)

    def fit(self, train: Task, eval_task: Task | None, cfg: RagConfig,
            ctx: RunContext) -> tuple[RagAdapted, None]:
        if cfg.rag_index:
            artifact = {"index": str(Path(cfg.rag_index).expanduser().resolve())}
            return self._adapt(train, cfg, ctx, artifact, []), None
        embedder_ref = cfg.rag_embedder or ctx.model.model  # empty: the LM itself, mean-pooled
        artifact = {"corpus": CORPUS, "embedder": resolve_embedder(embedder_ref)[0]}
        return self._adapt(train, cfg, ctx, artifact, training_corpus(train)), None

    def load(self, artifact_dir: Path, task: Task, cfg: RagConfig, ctx: RunContext) -> RagAdapted:
        path = artifact_dir / ARTIFACT
        if not path.exists():
            raise LmadaptError(f"{artifact_dir} has no {ARTIFACT}; is this a rag run folder?")
        artifact = json.loads(path.read_text())
        corpus = []
        if not artifact.get("index"):
            corpus = [json.loads(line) for line in (artifact_dir / CORPUS).read_text().splitlines() if line]
        return self._adapt(task, cfg, ctx, artifact, corpus)
