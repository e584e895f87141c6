"""Rationale tasks for Distilling Step-by-Step (Hsieh et al., 2023): input, label and a teacher's
chain-of-thought rationale per example.

Two ways in, both giving a generation `Task` whose examples are `RationaleExample`s:
- a JSONL file with `input`, `label` and `rationale` (optionally `teacher_label`), e.g. what
  `lmadapt distill rationales` writes;
- the paper's release layout, named `DIR:SPLIT` wherever a data file is accepted:
  `DIR/{name}_{split}.json` (JSON lines, name = the folder's name) plus the teacher's raw
  completions `DIR/llm/{split}_CoT_{k}.json` (JSON arrays, k = 0, 1, ... concatenated in order).

Rows come in three styles: `equation` (SVAMP: the label is an arithmetic expression, scored by
value), `choice` (multiple choice: `question` + `choices`) and `nli` (`premise` + `hypothesis`).
Raw teacher completions are parsed by `parse_completion`: the rationale, then the answer after
"The answer is", with run-on text (a following "\\n\\nQ: ...") cut off.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass
from pathlib import Path

from lmadapt.data.task import Example, Task
from lmadapt.errors import LmadaptError

ANSWER_MARKER = "The answer is"
RUN_ON = re.compile(r"\n\s*\n|\nQ:|\nA:|\bQ: ")  # where a completion starts the next few-shot item
NLI_LABELS = ("entailment", "neutral", "contradiction")
STYLES = ("equation", "choice", "nli", "text")


@dataclass(frozen=True)
class RationaleExample(Example):
    """An Example (text = model input, target = gold label) plus the teacher's output."""

    rationale: str = ""  # "" when the teacher's completion could not be parsed
    teacher_label: str = ""  # the teacher's answer ("" when unparsed)
    style: str = "text"  # equation | choice | nli | text (decides the metric)


@dataclass
class ParseReport:
    """How many raw completions parsed into (rationale, answer)."""

    total: int = 0
    parsed: int = 0
    unparsed_ids: tuple[int, ...] = ()

    @property
    def unparsed(self) -> int:
        return self.total - self.parsed

    def line(self) -> str:
        return f"{self.parsed}/{self.total} teacher completions parsed, {self.unparsed} could not be parsed"


def cut_run_on(text: str) -> str:
    """Drop what follows the first few-shot boundary ("\\n\\nQ: ..." and the like)."""
    match = RUN_ON.search(text)
    return text[:match.start()] if match else text


def parse_completion(raw: str) -> tuple[str, str] | None:
    """(rationale, answer) from one raw teacher completion, or None when there is no answer.

    'Luke ... 84 / 2 = 42. The answer is (84 / 2).\\n\\nQ: ...' → ('Luke ... 84 / 2 = 42.', '(84 / 2)')
    """
    head, marker, tail = cut_run_on(raw).partition(ANSWER_MARKER)
    if not marker:
        return None
    rationale = " ".join(head.split())
    answer = tail.split("\n")[0].strip().rstrip(".").strip()
    if not rationale or not answer:
        return None
    return rationale, answer


def _balanced_group(text: str) -> str | None:
    """The first bracketed group with balanced brackets: 'x (1 + (2)) y' → '(1 + (2))'."""
    start = text.find("(")
    if start < 0:
        return None
    depth = 0
    for i, char in enumerate(text[start:], start):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0:
            return text[start:i + 1]
    return None


def normalize_equation(label: str) -> str:
    """Shorter equivalent form: '( 84.0 / 2.0 )' → '( 84 / 2 )' (value unchanged)."""
    return " ".join(re.sub(r"(\d+)\.0\b", r"\1", label).split())


def teacher_answer(answer: str, style: str, choices: list[str] | None = None) -> str:
    """The teacher's answer text in the label's form (an equation, a choice, an NLI class)."""
    if style == "equation":
        return normalize_equation(_balanced_group(answer) or answer)
    clean = answer.strip().strip(string.punctuation + " ").strip()
    if style == "choice" and choices:
        letter = re.fullmatch(r"\(?([a-z])\)?(?:\s.*)?", clean.lower())
        if letter and ord(letter.group(1)) - 97 < len(choices):
            return choices[ord(letter.group(1)) - 97]
    if style == "nli":
        lowered = clean.lower()
        return next((label for label in NLI_LABELS if label in lowered), lowered)
    return clean


def _choices(row: dict) -> list[str]:
    raw = row["choices"]
    if isinstance(raw, dict) and "text" in raw:  # HF CommonsenseQA: {"label": [...], "text": [...]}
        raw = raw["text"]
    return [c["text"] if isinstance(c, dict) else str(c) for c in raw]


def row_input_and_label(row: dict, where: str) -> tuple[str, str, str, list[str]]:
    """(input text, gold label, style, choices) for one row of any supported style."""
    def need(name: str) -> object:
        if row.get(name) in (None, ""):
            raise LmadaptError(f"{where}: missing field {name!r} (fields: {', '.join(map(str, row))})")
        return row[name]

    if "premise" in row and "hypothesis" in row:
        text = row.get("input") or f"Premise: {need('premise')}\nHypothesis: {need('hypothesis')}"
        label = need("label")
        label = NLI_LABELS[label] if isinstance(label, int) and 0 <= label < 3 else str(label).strip()
        return str(text), label, "nli", []
    if "choices" in row:
        choices = _choices(row)
        listed = "\n".join(f"({chr(97 + i)}) {c}" for i, c in enumerate(choices))
        text = row.get("input") or f"{need('question')}\nAnswer Choices:\n{listed}"
        label = row.get("answer", row.get("label"))
        if label is None:
            raise LmadaptError(f"{where}: missing field 'answer' or 'label'")
        if isinstance(label, int) or (isinstance(label, str) and re.fullmatch(r"[A-Ea-e]", label)):
            index = label if isinstance(label, int) else ord(label.lower()) - 97
            label = choices[index]
        return str(text), str(label).strip(), "choice", choices
    text, label = str(need("input")), str(need("label")).strip()
    style = "equation" if _is_equation(label) else "text"
    return text, normalize_equation(label) if style == "equation" else label, style, []


def _is_equation(label: str) -> bool:
    from lmadapt.eval.arith import try_eval

    return bool(re.search(r"\d", label)) and try_eval(label) is not None


def _read_json_lines(path: Path) -> list[tuple[int, dict]]:
    """(line number, row) of a JSON-lines file, with the loaders' file:line errors."""
    from lmadapt.data.loaders import read_rows

    return list(read_rows(path))


def read_completions(llm_dir: Path, split: str) -> list[str]:
    """The teacher's raw completions for split, batches {split}_CoT_0.json, _1, ... in order."""
    out: list[str] = []
    k = 0
    while (path := llm_dir / f"{split}_CoT_{k}.json").exists():
        try:
            batch = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise LmadaptError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
        if not isinstance(batch, list) or not all(isinstance(s, str) for s in batch):
            raise LmadaptError(f"{path}: expected a JSON array of strings (raw teacher completions)")
        out += batch
        k += 1
    return out


def build_example(row: dict, where: str, raw: str | None = None) -> tuple[RationaleExample, bool]:
    """One example from a row and (optionally) a raw completion; the bool says it parsed."""
    text, label, style, choices = row_input_and_label(row, where)
    if raw is None:
        rationale = str(row.get("rationale") or "").strip()
        teacher = str(row.get("teacher_label") or "").strip()
        teacher = teacher_answer(teacher, style, choices) if teacher else ""
        return _example(text, label, where, rationale, teacher, style), bool(rationale)
    parsed = parse_completion(raw)
    if parsed is None:
        return _example(text, label, where, "", "", style), False
    rationale, answer = parsed
    return _example(text, label, where, rationale, teacher_answer(answer, style, choices), style), True


def _example(text: str, label: str, where: str, rationale: str, teacher: str, style: str) -> RationaleExample:
    return RationaleExample(text=text, target=label, source=where, rationale=rationale,
                            teacher_label=teacher, style=style)


def load_release(folder: str | Path, split: str, name: str | None = None) -> tuple[Task, ParseReport]:
    """The Distilling Step-by-Step release layout: DIR/{name}_{split}.json + DIR/llm/{split}_CoT_k.json."""
    folder = Path(folder)
    data_path = folder / f"{folder.name}_{split}.json"
    if not data_path.exists():
        raise LmadaptError(f"{folder}:{split}: {data_path} does not exist; expected the release layout "
                           f"DIR/{folder.name}_{split}.json (+ DIR/llm/{split}_CoT_0.json)")
    rows = _read_json_lines(data_path)
    completions = read_completions(folder / "llm", split)
    if completions and len(completions) != len(rows):
        raise LmadaptError(f"{folder}/llm: {len(completions)} teacher completions for {split} but "
                           f"{len(rows)} rows in {data_path.name}; the batches must cover every row in order")
    examples, unparsed = [], []
    for i, (line_no, row) in enumerate(rows):
        example, ok = build_example(row, f"{data_path}:{line_no}", completions[i] if completions else None)
        examples.append(example)
        if completions and not ok:
            unparsed.append(i)
    report = ParseReport(total=len(completions), parsed=len(completions) - len(unparsed),
                         unparsed_ids=tuple(unparsed))
    return _task(examples, name or f"{folder.name}:{split}"), report


def load_rationale_jsonl(path: str | Path, name: str | None = None) -> tuple[Task, ParseReport]:
    """A JSONL file with input, label and rationale (and optionally teacher_label) per line."""
    path = Path(path)
    examples, missing = [], []
    for i, (line_no, row) in enumerate(_read_json_lines(path)):
        example, ok = build_example(row, f"{path}:{line_no}")
        examples.append(example)
        if not ok:
            missing.append(i)
    report = ParseReport(total=len(examples), parsed=len(examples) - len(missing), unparsed_ids=tuple(missing))
    return _task(examples, name or path.stem), report


def _task(examples: list[RationaleExample], name: str) -> Task:
    if not examples:
        raise LmadaptError(f"{name}: no examples; the file is empty")
    return Task(name=name, kind="rationale", examples=list(examples))


def split_ref(ref: str | Path) -> tuple[Path, str] | None:
    """('DIR', 'SPLIT') when ref names a release-layout dataset as DIR:SPLIT, else None."""
    text = str(ref)
    folder, sep, split = text.rpartition(":")
    if sep and folder and re.fullmatch(r"[A-Za-z0-9_.-]+", split) and Path(folder).is_dir():
        return Path(folder), split
    return None


def _has_rationale_field(path: Path) -> bool:
    if path.suffix.lower() not in (".jsonl", ".json") or not path.is_file():
        return False
    # a probe only: bad bytes are reported, with line and offset, by the loader that reads the file
    with path.open(encoding="utf-8-sig", errors="replace") as handle:
        first = next((line for line in handle if line.strip()), "")
    try:
        row = json.loads(first)
    except json.JSONDecodeError:
        return False
    return isinstance(row, dict) and "rationale" in row and any(k in row for k in ("input", "question", "premise"))


def maybe_rationale_task(ref: str | Path, spec: object = None, name: str | None = None) -> Task | None:
    """The rationale task ref names (DIR:SPLIT, or JSONL with input/label/rationale), else None.

    This is distill's `load_task`: the shared loader tries it before its generic readers whenever
    distill is among the methods of a command (`spec`, the field mapping, does not apply here).
    """
    if (release := split_ref(ref)) is not None:
        return load_release(*release, name=name)[0]
    if _has_rationale_field(Path(ref)):
        return load_rationale_jsonl(ref, name)[0]
    return None


def load_rationale_task(ref: str | Path, name: str | None = None) -> tuple[Task, ParseReport]:
    """A rationale task and its parse report from DIR:SPLIT or a rationale JSONL file."""
    if (release := split_ref(ref)) is not None:
        return load_release(*release, name=name)
    if not Path(ref).exists():
        raise LmadaptError(f"{ref}: no such file; pass a rationale JSONL file or a release folder as DIR:SPLIT")
    return load_rationale_jsonl(ref, name)


def rationale_examples(task: Task) -> list[RationaleExample]:
    """task's examples as RationaleExamples; one-line error when the task has no rationales."""
    if not all(isinstance(ex, RationaleExample) for ex in task.examples):
        raise LmadaptError(f"task {task.name!r} has no rationales; give a JSONL file with input/label/"
                           "rationale fields or a release folder as DIR:SPLIT (see docs/distill.md)")
    return list(task.examples)  # type: ignore[arg-type]
