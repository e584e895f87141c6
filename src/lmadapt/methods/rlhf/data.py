"""Preference pairs (prompt, chosen, rejected) and prompt files, validated row by row.

Preference files are JSONL/CSV/Parquet rows with `prompt`, `chosen`, `rejected` fields, read
into a task of kind `preferences` (`PreferenceExample`: text = prompt, target = chosen, plus
rejected) by `read_preferences`, the `load_task` of the methods `reward` and `dpo`; prompt files
have a `prompt` (or `text`) field, or are plain text with one prompt per line. Every bad row is
reported as `file:line: what is wrong; how to fix it`.
"""

from __future__ import annotations

from pathlib import Path

from lmadapt.data.loaders import read_rows
from lmadapt.data.task import PreferenceExample, Task
from lmadapt.errors import LmadaptError

PAIR_FIELDS = ("prompt", "chosen", "rejected")
TABLE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


def preference_pair(prompt: str, chosen: str, rejected: str, source: str = "") -> PreferenceExample:
    """One comparison: for `prompt`, the response `chosen` is preferred over `rejected`."""
    return PreferenceExample(text=prompt, target=chosen, source=source, rejected=rejected)


def join_text(prompt: str, response: str) -> str:
    """The one text a reward model scores: the prompt followed by the response.

    A space is inserted only when neither side brings whitespace, so generated continuations
    (which carry their own leading space) and stored responses are joined the same way.
    """
    if not prompt or not response or prompt[-1].isspace() or response[0].isspace():
        return prompt + response
    return prompt + " " + response


def _text_field(row: dict, name: str, where: str, allow_empty: bool = False) -> str:
    if name not in row or row[name] is None:
        raise LmadaptError(f"{where}: missing field {name!r} (fields: {', '.join(map(str, row))}); "
                           f"preference rows need {', '.join(PAIR_FIELDS)}")
    value = row[name]
    if not isinstance(value, str):
        raise LmadaptError(f"{where}: field {name!r} must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise LmadaptError(f"{where}: field {name!r} is empty; fill or drop the row")
    return value


def load_preferences(path: str | Path) -> list[PreferenceExample]:
    """Read preference pairs; errors name the file and line. The prompt may be empty."""
    path = Path(path)
    pairs = []
    for line_no, row in read_rows(path):
        where = f"{path}:{line_no}"
        prompt = _text_field(row, "prompt", where, allow_empty=True)
        chosen = _text_field(row, "chosen", where)
        rejected = _text_field(row, "rejected", where)
        if chosen == rejected:
            raise LmadaptError(f"{where}: 'chosen' and 'rejected' are the same text; a pair must differ")
        pairs.append(preference_pair(prompt, chosen, rejected, where))
    if not pairs:
        raise LmadaptError(f"{path}: no preference pairs; the file is empty")
    return pairs


def _holds_pairs(path: Path) -> bool:
    """Whether the first row of a data file has `chosen` and `rejected` fields."""
    if not path.is_file() or path.suffix.lower() not in TABLE_SUFFIXES:
        return False
    try:
        first = next(iter(read_rows(path)), None)
    except LmadaptError:
        return False  # the generic loader reports what is wrong with the file
    return first is not None and "chosen" in first[1] and "rejected" in first[1]


def read_preferences(ref: str | Path, spec: object = None, name: str | None = None) -> Task | None:
    """The `load_task` of `reward` and `dpo`: a task of preference pairs when the data is asked
    for as `--kind preferences` or its rows have chosen/rejected fields; None otherwise (the
    field mapping of `spec` does not apply: the fields are prompt, chosen, rejected)."""
    kind = getattr(spec, "kind", "auto")
    if kind not in ("auto", "preferences") or (kind == "auto" and not _holds_pairs(Path(ref))):
        return None
    return Task(name=name or Path(ref).stem, kind="preferences", examples=load_preferences(ref))


def pairs_of(task: Task) -> list[PreferenceExample]:
    """task's examples as preference pairs; one line when it holds something else."""
    if not all(isinstance(ex, PreferenceExample) for ex in task.examples):
        raise LmadaptError(f"task {task.name!r} holds no preference pairs; give rows with prompt, chosen, "
                           "rejected fields (--kind preferences)")
    return list(task.examples)  # type: ignore[arg-type]


def load_prompts(path: str | Path, field_name: str = "prompt") -> list[str]:
    """Prompts from JSONL/CSV/Parquet (`prompt`, else `text` field) or a .txt file (one per line)."""
    path = Path(path)
    if path.suffix.lower() == ".txt":
        if not path.exists():
            raise LmadaptError(f"prompt file {path} does not exist")
        prompts = [line.rstrip("\n") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        prompts = []
        for line_no, row in read_rows(path):
            name = field_name if field_name in row else "text" if "text" in row else field_name
            prompts.append(_text_field(row, name, f"{path}:{line_no}"))
    if not prompts:
        raise LmadaptError(f"{path}: no prompts; the file is empty")
    return prompts
