"""Teacher rationales by few-shot chain-of-thought prompting (Hsieh et al., 2023, §3.1; Wei et
al., 2022): each input is shown after k demonstrations "Q: input\\nA: rationale The answer is
label." and the teacher continues "A: ...". Completions are parsed by `parse_completion`.

Resumable: rows are appended to the output JSONL after every batch, and ids already there are
skipped on the next call, so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tqdm.auto import tqdm

from lmadapt.data.loaders import read_rows
from lmadapt.decoding import GenerationConfig, generate
from lmadapt.errors import LmadaptError
from lmadapt.methods.distill.data import (
    ANSWER_MARKER,
    ParseReport,
    parse_completion,
    row_input_and_label,
    split_ref,
    teacher_answer,
)
from lmadapt.models.load import (
    ModelSpec,
    load_causal_lm,
)
from lmadapt.outdir import locked

STOP = ["\n\nQ:", "\nQ:"]


def read_inputs(data: str) -> list[dict]:
    """Rows {id, input, label, style, choices} from DIR:SPLIT or a JSONL/CSV file with `input`."""
    if (release := split_ref(data)) is not None:
        folder, split = release
        path = folder / f"{folder.name}_{split}.json"
    else:
        path = Path(data)
    rows = []
    for i, (line_no, row) in enumerate(read_rows(path)):
        where = f"{path}:{line_no}"
        if "label" in row or "answer" in row:
            text, label, style, choices = row_input_and_label(row, where)
        elif row.get("input"):
            text, label, style, choices = str(row["input"]), "", "text", []
        else:
            raise LmadaptError(f"{where}: missing field 'input'; each row needs the question text")
        rows.append({"id": str(row.get("id", i)), "input": text, "label": label, "style": style,
                     "choices": choices})
    if not rows:
        raise LmadaptError(f"{path}: no rows")
    return rows


def read_shots(path: Path) -> str:
    """The few-shot prefix: 'Q: input\\nA: rationale The answer is label.\\n\\n' per demonstration."""
    parts = []
    for line_no, row in read_rows(Path(path)):
        missing = [k for k in ("input", "rationale", "label") if not row.get(k)]
        if missing:
            raise LmadaptError(f"{path}:{line_no}: missing field {missing[0]!r}; shots need input, rationale, label")
        parts.append(f"Q: {row['input']}\nA: {row['rationale']} {ANSWER_MARKER} {row['label']}.\n\n")
    if not parts:
        raise LmadaptError(f"{path}: no demonstrations")
    return "".join(parts)


ROW_KEYS = ("id", "input", "rationale", "teacher_label", "raw")  # what completion_row writes


def check_rationale_out(out: Path, inputs: tuple[str | Path, ...]) -> None:
    """`out` is appended to: it must be new, or a rationale file written here, never an input."""
    target = Path(out).expanduser().resolve()
    for ref in inputs:
        if Path(str(ref).split(":")[0]).expanduser().resolve() == target:
            raise LmadaptError(f"--out {out} is an input file; write the rationales to a new file")
    if target.is_dir():
        raise LmadaptError(f"--out {out} is a folder; pass a .jsonl file name")
    if not target.exists() or target.stat().st_size == 0:
        return
    with target.open(encoding="utf-8", errors="replace") as handle:
        first = handle.readline()
    try:
        row = json.loads(first)
    except ValueError:
        row = None
    if not isinstance(row, dict) or any(k not in row for k in ROW_KEYS):
        raise LmadaptError(f"--out {out} exists and is not a rationale file lmadapt wrote "
                           "(its rows would be appended to); pass a new file name")


def done_ids(out: Path) -> set[str]:
    """Ids already written to out (a half-written last line from a crash is ignored)."""
    if not out.exists():
        return set()
    ids = set()
    for line in out.read_text(encoding="utf-8").splitlines():
        try:
            ids.add(str(json.loads(line)["id"]))
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return ids


def load_teacher(spec: ModelSpec) -> tuple[torch.nn.Module, object]:
    """A causal LM teacher and its (left-padding) tokenizer."""
    model, tokenizer, _ = load_causal_lm(spec, "the few-shot CoT teacher")
    return model.eval(), tokenizer


def completion_row(item: dict, raw: str) -> tuple[dict, bool]:
    """The output row for one input and its raw completion; the bool says it parsed."""
    parsed = parse_completion(raw)
    rationale, answer = parsed if parsed else ("", "")
    teacher = teacher_answer(answer, item["style"], item["choices"]) if parsed else ""
    row = {"id": item["id"], "input": item["input"], "label": item["label"] or teacher,
           "rationale": rationale, "teacher_label": teacher, "raw": raw}
    return row, parsed is not None


def generate_rationales(teacher: ModelSpec, data: str, shots: Path, out: Path, batch_size: int = 8,
                        max_new_tokens: int = 128, limit: int = 0) -> ParseReport:
    """Append one row per not-yet-done input to out; returns the parse report of this call."""
    if batch_size < 1 or max_new_tokens < 1:
        raise LmadaptError("batch_size and max_new_tokens must be >= 1")
    check_rationale_out(out, (data, shots))
    prefix = read_shots(shots)
    items = read_inputs(data)
    items = items[:limit] if limit else items
    with locked(out):
        return _append_rationales(teacher, items, prefix, out, batch_size, max_new_tokens)


def _append_rationales(teacher: ModelSpec, items: list[dict], prefix: str, out: Path, batch_size: int,
                       max_new_tokens: int) -> ParseReport:
    finished = done_ids(out)
    todo = [item for item in items if item["id"] not in finished]
    report = ParseReport()
    if not todo:
        return report
    model, tokenizer = load_teacher(teacher)
    cfg = GenerationConfig(max_new_tokens=max_new_tokens, stop=STOP)
    out.parent.mkdir(parents=True, exist_ok=True)
    unparsed: list[int] = []
    with out.open("a", encoding="utf-8") as handle, tqdm(total=len(todo), desc="rationales", unit="ex") as bar:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            prompts = [f"{prefix}Q: {item['input']}\nA:" for item in chunk]
            completions = generate(model, tokenizer, prompts, cfg)
            for offset, (item, raw) in enumerate(zip(chunk, completions, strict=True)):
                row, ok = completion_row(item, raw)
                if not ok:
                    unparsed.append(start + offset)
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            handle.flush()
            bar.update(len(chunk))
    return ParseReport(total=len(todo), parsed=len(todo) - len(unparsed), unparsed_ids=tuple(unparsed))
