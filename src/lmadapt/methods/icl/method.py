"""icl: k demonstrations (random or nearest by embedding similarity) fitted to the context window.

Plain prompts: `prompt(demo) target` blocks before the query's prompt. Chat data: each
demonstration is an earlier user/assistant exchange, after the query's system message (if any)
and before its own turns, all rendered with the chat template.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from lmadapt.data.chat import prompt_messages
from lmadapt.data.task import Example, Task
from lmadapt.index import Embedder, MemoryIndex
from lmadapt.methods.base import RunContext, TaskModelAdapted, fitted, task_model_for
from lmadapt.methods.icl.config import ICLConfig
from lmadapt.models.chat import render
from lmadapt.models.embed import FrozenEmbedder
from lmadapt.models.task_model import PromptBuilder, TaskModel, context_window


class DemoPrompter(PromptBuilder):
    """Builds `demo_1 … demo_k + prompt(text)` within a token budget (most similar demo last)."""

    def __init__(self, tm: TaskModel, pool: list[Example], cfg: ICLConfig,
                 embedder: FrozenEmbedder | Embedder | None, seed: int) -> None:
        self.tm, self.pool, self.cfg, self.embedder = tm, pool, cfg, embedder
        self.fixed = balanced_sample(pool, cfg.shots, seed)
        self.index: MemoryIndex | None = None  # exact cosine search over the pool's embeddings
        if cfg.selection == "nearest" and embedder is not None:
            self.index = MemoryIndex(_normalize(embedder.encode([ex.text for ex in pool], progress=True)))
        if tm.task.kind == "classification":  # room for the longest label after the prompt
            label_tokens = max(len(tm.tokenizer(tm.task.label_prefix + label, add_special_tokens=False)["input_ids"])
                               for label in tm.task.labels)
        else:  # room for the generated answer
            label_tokens = tm.max_new_tokens
        window = context_window(tm.model, tm.tokenizer)
        self.budget = min(cfg.max_prompt_tokens, window - label_tokens - 1)
        tm.max_length = max(tm.max_length, min(window, self.budget + label_tokens + 1))

    def demo_text(self, ex: Example) -> str:
        task = self.tm.task
        sep = task.label_prefix if task.kind == "classification" else ""  # as the training target follows
        return f"{task.prompt(ex.text)}{sep}{ex.target}\n\n"

    def choose(self, text: str) -> list[Example]:
        """Demonstrations for one input, least similar first."""
        if self.index is None:
            return self.fixed
        _, top = self.index.nearest(_normalize(self.embedder.encode([text])), self.cfg.shots)  # (1, k)
        return [self.pool[i] for i in top[0][::-1]]

    @property
    def prefix_is_shared(self) -> bool:
        """True when every input gets the same demonstrations (scoring can cache them once)."""
        return self.cfg.selection == "random"

    def shared_split(self, texts: list[str]) -> tuple[str, list[str]] | None:
        """The demonstrations as the shared prefix, when every input gets the same ones (random
        selection) and the token budget cut none of them."""
        if not self.prefix_is_shared:
            return None
        parts = [self.split(t) for t in texts]
        prefixes = {prefix for prefix, _ in parts}
        if len(prefixes) != 1 or not parts[0][0]:
            return None
        return parts[0][0], [query for _, query in parts]

    def split(self, text: str) -> tuple[str, str]:
        """(demonstrations, query prompt) for one input; the prompt is their concatenation."""
        query = self.tm.task.prompt(text)
        used = len(self.tm.tokenizer(query)["input_ids"])
        demos: list[str] = []
        for ex in reversed(self.choose(text)):  # most similar first, until the budget is spent
            block = self.demo_text(ex)
            cost = len(self.tm.tokenizer(block, add_special_tokens=False)["input_ids"])
            if used + cost > self.budget:
                break
            demos.insert(0, block)
            used += cost
        return "".join(demos), query

    def __call__(self, text: str) -> str:
        return "".join(self.split(text))

    def messages(self, text: str, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        """Chat data: the query's system message, then the demonstrations as user/assistant
        exchanges (least similar first; most similar kept first within the token budget), then
        the query's own turns."""
        system = [m for m in messages[:1] if m["role"] == "system"]
        query = messages[len(system):]
        demos: list[list[dict[str, str]]] = []
        for ex in reversed(self.choose(text)):  # most similar first, until the budget is spent
            turns = [m for m in prompt_messages(ex.text) if m["role"] != "system"]
            trial = [[*turns, {"role": "assistant", "content": ex.target}], *demos]
            if self._chat_tokens([*system, *(m for d in trial for m in d), *query]) > self.budget:
                break
            demos = trial
        return [*system, *(m for d in demos for m in d), *query]

    def _chat_tokens(self, messages: list[dict[str, str]]) -> int:
        rendered = render(self.tm.tokenizer, self.tm.chat_template, messages, generation_prompt=True)
        return len(self.tm.tokenizer(rendered, add_special_tokens=False)["input_ids"])


def balanced_sample(pool: list[Example], shots: int, seed: int) -> list[Example]:
    """`shots` demonstrations drawn round-robin over the labels in a seeded order, shuffled.

    Small LMs copy the majority or the last demonstration's label; a balanced set avoids that bias.
    """
    rng = random.Random(seed)
    by_label: dict[str, list[Example]] = {}
    for ex in rng.sample(pool, len(pool)):
        by_label.setdefault(ex.target, []).append(ex)
    labels = sorted(by_label)
    rng.shuffle(labels)
    picked: list[Example] = []
    while len(picked) < min(shots, len(pool)):
        for label in labels:
            if by_label[label] and len(picked) < shots:
                picked.append(by_label[label].pop())
    rng.shuffle(picked)
    return picked


def _normalize(vecs: np.ndarray) -> np.ndarray:
    return vecs / np.linalg.norm(vecs, axis=1, keepdims=True).clip(min=1e-12)


def _embedder(tm: TaskModel, cfg: ICLConfig, ctx: RunContext) -> FrozenEmbedder | Embedder | None:
    if cfg.selection != "nearest":
        return None
    if cfg.embedder:  # a named sentence embedder (lmadapt.index), e.g. minilm
        return Embedder(cfg.embedder, device=str(ctx.model.torch_device()))
    backbone = tm.model.base_model if tm.kind == "causal" else tm.model.get_encoder()
    return FrozenEmbedder.from_backbone(backbone, tm.tokenizer, tm.kind, "last" if tm.kind == "causal" else "mean")


class ICL:
    name = "icl"
    config_class = ICLConfig
    model_kinds = ("causal", "seq2seq")
    task_kinds = ("classification", "generation")
    trains = False
    summary = "k demonstrations in the prompt"

    def _adapt(self, task: Task, pool: list[Example], cfg: ICLConfig, ctx: RunContext) -> TaskModelAdapted:
        tm = task_model_for(task, ctx, need=self.model_kinds, method=self.name)
        tm.prompt_builder = DemoPrompter(tm, pool, cfg, _embedder(tm, cfg, ctx), ctx.train.seed)

        def save(tm: TaskModel, artifact_dir: Path) -> None:
            rows = [{"text": ex.text, "target": ex.target} for ex in pool]
            (artifact_dir / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

        adapted = fitted(tm, save)
        adapted.trainable_params = 0
        return adapted

    def fit(self, train: Task, eval_task: Task | None, cfg: ICLConfig,
            ctx: RunContext) -> tuple[TaskModelAdapted, None]:
        pool = train.subsample(cfg.pool_size, ctx.train.seed).examples
        return self._adapt(train, pool, cfg, ctx), None

    def load(self, artifact_dir: Path, task: Task, cfg: ICLConfig, ctx: RunContext) -> TaskModelAdapted:
        lines = (artifact_dir / "pool.jsonl").read_text().splitlines()
        pool = [Example(text=r["text"], target=r["target"]) for r in map(json.loads, lines)]
        return self._adapt(task, pool, cfg, ctx)
