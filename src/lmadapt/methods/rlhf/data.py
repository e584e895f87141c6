"""Preference pairs (prompt, chosen, rejected) and prompt files, validated row by row.

Preference files are JSONL/CSV/Parquet rows with `prompt`, `chosen`, `rejected` fields; prompt
files have a `prompt` (or `text`) field, or are plain text with one prompt per line. Every bad
row is reported as `file:line: what is wrong; how to fix it`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lmadapt.data.loaders import read_rows
from lmadapt.errors import LmadaptError

PAIR_FIELDS = ("prompt", "chosen", "rejected")


@dataclass(frozen=True)
class PreferencePair:
    """One comparison: for `prompt`, the response `chosen` is preferred over `rejected`."""

    prompt: str
    chosen: str
    rejected: str
    source: str = ""  # "file:line" for error messages


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


def load_preferences(path: str | Path) -> list[PreferencePair]:
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
        pairs.append(PreferencePair(prompt, chosen, rejected, where))
    if not pairs:
        raise LmadaptError(f"{path}: no preference pairs; the file is empty")
    return pairs


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


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """Rows as JSON lines (plain write; callers write inside an atomic run folder)."""
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
