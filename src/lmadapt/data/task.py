"""The Task: examples + kind + label set + prompt template + metric.

Every method receives a `Task`. Loaders for JSONL / CSV / Parquet / a saved `datasets` dataset
live in `loaders.py`; this file holds the data structure and its checks.
"""

from __future__ import annotations

import json
import random
from dataclasses import MISSING, dataclass, field, fields, replace

from lmadapt.errors import LmadaptError
from lmadapt.eval.metrics import check_metric

# classification: text → label; generation: text → output text; preferences: prompt with a chosen
# and a rejected response; prompts: inputs only (scored by a reward); rationale: text → label with
# a teacher's rationale (Distilling Step-by-Step), also usable as generation (text → label).
KINDS = ("classification", "generation", "preferences", "prompts", "rationale")
DEFAULT_TEMPLATES = {
    "classification": "{text}\nAnswer:",
    "generation": "{text}\n",
    "prompts": "{text}",
    "preferences": "{text}",
    "rationale": "{text}\n",
}


class DataWarning(UserWarning):
    """Data that loads but is probably not what the user meant (duplicate texts, eval rows that
    also appear in train); the message names the file and the count."""


@dataclass(frozen=True)
class Example:
    """One input with its target: a label (classification) or an output text (generation)."""

    text: str
    target: str
    source: str = ""  # "file:line" for error messages
    gold_source: str = ""  # optional: where the answer lives (retrieval recall@k for rag)

    @property
    def key(self) -> str:
        """What makes two rows the same example (duplicates, train/eval overlap, the split)."""
        return self.text


@dataclass(frozen=True)
class PreferenceExample(Example):
    """A preference pair: for the prompt (`text`), the response `target` (chosen) is preferred
    over `rejected`. Many pairs may share a prompt; the pair as a whole is the example."""

    rejected: str = ""

    @property
    def prompt(self) -> str:
        return self.text

    @property
    def chosen(self) -> str:
        return self.target

    @property
    def key(self) -> str:
        return "\x00".join((self.text, self.target, self.rejected))


@dataclass
class Task:
    """Examples plus everything a method needs to know to learn and be scored on them."""

    name: str
    kind: str
    examples: list[Example]
    labels: list[str] = field(default_factory=list)
    template: str = ""
    label_prefix: str = " "  # text placed between the prompt and the label word when scoring
    metric: str = ""  # how predictions are scored (eval/metrics.py); the kind's default when empty
    format: str = "text"  # text | prompt_completion | messages | alpaca (data/chat.py)
    chat_template: str = "auto"  # chat data: auto (the tokenizer's) | none (plain template) | jinja text
    train_on: str = "all"  # chat data: the loss covers every assistant turn (all) or the last (last)
    stop: tuple[str, ...] = ()  # generation ends at these strings (cut before the first); stop=

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise LmadaptError(f"unknown task kind {self.kind!r}; use one of {', '.join(KINDS)}")
        self.metric = check_metric(self.kind, self.metric)
        if not self.template:
            self.template = DEFAULT_TEMPLATES[self.kind]
        if "{text}" not in self.template:
            raise LmadaptError(f"prompt template {self.template!r} has no {{text}} slot; add one")
        if not self.examples:
            raise LmadaptError(f"task {self.name!r} has no examples; check the file and field names")
        if self.kind == "classification":
            self._check_labels()
        if self.train_on not in ("all", "last"):
            raise LmadaptError(f"train_on must be all or last, got {self.train_on!r}")
        self.stop = stop_strings(self.stop)

    @property
    def chat(self) -> bool:
        """Conversational data: prompts are rendered with a chat template (unless chat_template=none)."""
        return self.format in ("messages", "alpaca") and self.chat_template != "none"

    def _check_labels(self) -> None:
        if not self.labels:
            self.labels = sorted({ex.target for ex in self.examples})
        self._check_numeric_labels()
        known = set(self.labels)
        for ex in self.examples:
            if ex.target not in known:
                raise LmadaptError(
                    f"{ex.source or self.name}: label {ex.target!r} is not in the label set "
                    f"{self.labels}; add it with --labels or fix the row"
                )

    def _check_numeric_labels(self) -> None:
        """Refuse two labels that spell one number ('1' and '1.0', '01' and '1'): silently they
        would be two classes. (Numbers in JSON/Parquet are already one spelling: 1.0 -> '1'.)"""
        seen: dict[float, str] = {}
        for label in self.labels:
            value = _as_number(label)
            if value is None:
                continue
            if value in seen:
                first = seen[value]
                rows = {lab: next((ex.source for ex in self.examples if ex.target == lab), "")
                        for lab in (first, label)}
                where = " and ".join(f"{lab!r} ({rows[lab]})" if rows[lab] else repr(lab)
                                     for lab in (first, label))
                raise LmadaptError(f"task {self.name!r}: labels {where} are the same number; write "
                                   "every label one way (e.g. all '1', not '1.0')")
            seen[value] = label

    @classmethod
    def skeleton(cls, name: str, kind: str, labels: list[str], template: str,
                 label_prefix: str = " ", **settings: object) -> Task:
        """A task without examples (what a saved run needs to predict on new inputs); `settings`
        are the other fields of `meta()` (each keeps its default when absent)."""
        task = object.__new__(cls)
        for f in fields(cls):
            if f.name != "examples":
                setattr(task, f.name, f.default_factory() if f.default_factory is not MISSING else f.default)
        unknown = [k for k in settings if k not in {f.name for f in fields(cls)} or k == "examples"]
        if unknown:
            raise LmadaptError(f"unknown task setting {unknown[0]!r}")
        for key, value in settings.items():
            setattr(task, key, value)
        task.name, task.kind, task.examples, task.labels = name, kind, [], list(labels)
        task.template, task.label_prefix = template, label_prefix
        task.metric = check_metric(kind, task.metric)
        task.stop = stop_strings(task.stop)
        return task

    def meta(self) -> dict:
        """Every field but the examples: what a run folder keeps of its task (`skeleton` reads it)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "examples"}

    def prompt(self, text: str) -> str:
        """The prompt a language model sees for one input."""
        return self.template.replace("{text}", text)

    def with_examples(self, examples: list[Example], suffix: str = "") -> Task:
        """A copy of this task over other examples (same labels and template)."""
        return replace(self, name=self.name + suffix, examples=list(examples))

    def texts(self) -> list[str]:
        return [ex.text for ex in self.examples]

    def targets(self) -> list[str]:
        return [ex.target for ex in self.examples]

    def label_ids(self) -> list[int]:
        index = {label: i for i, label in enumerate(self.labels)}
        return [index[ex.target] for ex in self.examples]

    def check_trainable(self) -> None:
        """Raise if a classification task cannot train a classifier (one class only)."""
        if self.kind == "classification" and len({ex.target for ex in self.examples}) < 2:
            raise LmadaptError(
                f"task {self.name!r} has one class only ({self.examples[0].target!r}); "
                "training a classifier needs at least two"
            )

    def subsample(self, n: int | None, seed: int) -> Task:
        """At most n examples, drawn without replacement with a fixed seed (stratified order kept)."""
        if n is None or n >= len(self.examples):
            return self
        rng = random.Random(seed)
        picked = rng.sample(range(len(self.examples)), n)
        return self.with_examples([self.examples[i] for i in sorted(picked)])


def stop_strings(value: object) -> tuple[str, ...]:
    """stop= as a tuple of strings: a list, one string, or a JSON list (`'["\\n\\n", "Q:"]'`,
    for escapes and commas on a command line); empty strings are refused."""
    if isinstance(value, str):
        if value.lstrip().startswith("["):
            try:
                value = json.loads(value)
            except ValueError as err:
                raise LmadaptError(f"stop={value}: not a JSON list of strings ({err})") from None
        else:
            value = [value] if value else []
    if not isinstance(value, (list, tuple)) or not all(isinstance(s, str) for s in value):
        raise LmadaptError(f"stop={value!r}: give a string or a list of strings")
    if any(not s for s in value):
        raise LmadaptError("stop strings must be non-empty; remove the empty entry")
    return tuple(value)


def duplicate_count(task: Task) -> int:
    """Rows whose text repeats an earlier row's text (0 when every text is distinct)."""
    return len(task.examples) - len({ex.key for ex in task.examples})


def overlap_count(train: Task, evals: Task) -> int:
    """Eval rows whose text also appears in the training data (leaked into training)."""
    seen = {ex.key for ex in train.examples}
    return sum(ex.key in seen for ex in evals.examples)


def split_task(task: Task, eval_fraction: float, seed: int) -> tuple[Task, Task]:
    """Split one task into train and eval parts with a seeded shuffle.

    All copies of a text (of a pair, for preferences: `Example.key`) land on the same side, so
    eval never scores an example trained on; with distinct examples this is exactly the first
    `eval_fraction` of the shuffled rows.
    """
    if not 0.0 < eval_fraction < 1.0:
        raise LmadaptError(f"--eval-split must be between 0 and 1, got {eval_fraction}")
    order = list(range(len(task.examples)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, round(len(order) * eval_fraction))
    copies: dict[str, list[int]] = {}
    for i in order:
        copies.setdefault(task.examples[i].key, []).append(i)
    eval_ids: list[int] = []
    for group in copies.values():  # groups in shuffled order of their first row
        if len(eval_ids) >= n_eval:
            break
        eval_ids.extend(group)
    if len(eval_ids) >= len(order):
        raise LmadaptError(f"task {task.name!r} has too few distinct texts ({len(copies)} in "
                           f"{len(order)} rows) to split off an eval set")
    taken = set(eval_ids)
    eval_ids, train_ids = sorted(taken), [i for i in range(len(order)) if i not in taken]
    train = task.with_examples([task.examples[i] for i in train_ids])
    evals = task.with_examples([task.examples[i] for i in eval_ids], suffix=":eval")
    return train, evals


def validation_split(task: Task, fraction: float, seed: int) -> tuple[Task, Task]:
    """(train, validation): `fraction` of the training data held out for selection, seeded. A
    classification task is stratified (each label keeps its share, at least one example of a
    label with two or more); copies of a text stay on one side, as in split_task."""
    if not 0.0 < fraction < 1.0:
        raise LmadaptError(f"val_split must be between 0 and 1, got {fraction}")
    if task.kind != "classification":
        train, val = split_task(task, fraction, seed)
        return train, task.with_examples(val.examples, suffix=":val")
    groups: dict[str, list[int]] = {}
    for i, ex in enumerate(task.examples):
        groups.setdefault(ex.key, []).append(i)
    by_label: dict[str, list[list[int]]] = {}
    for ids in groups.values():
        by_label.setdefault(task.examples[ids[0]].target, []).append(ids)
    rng = random.Random(seed)
    held: list[int] = []
    for label in sorted(by_label):
        members = by_label[label]
        rng.shuffle(members)
        rows = sum(len(g) for g in members)
        want = max(1, round(rows * fraction)) if rows >= 2 else 0
        taken = 0
        for ids in members:
            if taken >= want or taken + len(ids) >= rows:
                break
            held.extend(ids)
            taken += len(ids)
    if not held or len(held) >= len(task.examples):
        raise LmadaptError(f"task {task.name!r} has too few examples ({len(task.examples)}) to hold out "
                           f"val_split={fraction}; add data or set val_split=0")
    taken = set(held)
    train = task.with_examples([ex for i, ex in enumerate(task.examples) if i not in taken])
    return train, task.with_examples([task.examples[i] for i in sorted(taken)], suffix=":val")


def _as_number(text: str) -> float | None:
    """The number a label spells ('1', '1.0', '+1', '1e0'), or None for a word; NaN counts as none."""
    try:
        value = float(text)
    except ValueError:
        return None
    return None if value != value else value
