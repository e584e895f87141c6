"""Load a Task from JSONL, CSV, Parquet or a saved `datasets` dataset, with field mapping.

Every bad row is reported with its file and line, e.g. `train.jsonl:17: missing field 'label'`.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lmadapt.data.task import Example, Task, split_task
from lmadapt.errors import LmadaptError


@dataclass
class DataSpec:
    """How to read a data file into a Task."""

    input_field: str = "text"  # field holding the model input
    label_field: str = "label"  # classification target field
    output_field: str = "output"  # generation target field
    kind: str = "auto"  # classification | generation | prompts | auto (label field → classification)
    labels: tuple[str, ...] = ()  # fixed label set; inferred from the train data when empty
    template: str = ""  # prompt template with a {text} slot; a per-kind default when empty
    source_field: str = "source"  # optional gold-source field (rag's recall@k); absent = none


def _rows_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise LmadaptError(f"{path}:{line_no}: not valid JSON ({err.msg}); fix the line") from None
            if not isinstance(row, dict):
                raise LmadaptError(f"{path}:{line_no}: expected a JSON object per line")
            yield line_no, row


def _rows_csv(path: Path) -> Iterator[tuple[int, dict]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        for row in reader:
            yield reader.line_num, row


def _rows_table(path: Path) -> Iterator[tuple[int, dict]]:
    """Parquet files and saved `datasets` folders: 'line' is the 1-based row number."""
    if path.is_dir():
        import datasets

        try:
            data = datasets.load_from_disk(str(path))
        except FileNotFoundError:
            raise LmadaptError(f"{path}: not a saved datasets folder (expected dataset_info.json)") from None
        if isinstance(data, datasets.DatasetDict):
            split = "train" if "train" in data else next(iter(data))
            data = data[split]
        rows = iter(data)
    else:
        import pyarrow.parquet as pq

        rows = iter(pq.read_table(path).to_pylist())
    yield from enumerate(rows, start=1)


def read_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """Rows of a data file as (line number, dict); the format comes from the suffix."""
    if not path.exists():
        raise LmadaptError(f"data file {path} does not exist; check the path or use a pull name")
    suffix = path.suffix.lower()
    if path.is_dir() or suffix == ".parquet":
        return _rows_table(path)
    if suffix in (".jsonl", ".json"):
        return _rows_jsonl(path)
    if suffix == ".csv":
        return _rows_csv(path)
    raise LmadaptError(f"{path}: unsupported file type {suffix!r}; use .jsonl, .csv, .parquet or a datasets folder")


def _field(row: dict, name: str, where: str) -> str:
    if name not in row or row[name] is None:
        raise LmadaptError(f"{where}: missing field {name!r} (fields: {', '.join(map(str, row))}); "
                           f"map it with --input-field/--label-field/--output-field")
    value = row[name]
    text = value if isinstance(value, str) else json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    if not text.strip():
        raise LmadaptError(f"{where}: field {name!r} is empty; fill or drop the row")
    return text


def _infer_kind(first: dict, spec: DataSpec, path: Path) -> str:
    if spec.kind != "auto":
        return spec.kind
    if spec.label_field in first:
        return "classification"
    if spec.output_field in first:
        return "generation"
    raise LmadaptError(f"{path}: no {spec.label_field!r} or {spec.output_field!r} field; "
                       "name the target with --label-field or --output-field")


def load_task(path: str | Path, spec: DataSpec | None = None, name: str | None = None) -> Task:
    """Read a data file into a Task, validating every row."""
    from lmadapt.data.rationale import maybe_rationale_task

    # Distilling Step-by-Step data: DIR:SPLIT (release layout) or input/label/rationale JSONL
    if (rationale_task := maybe_rationale_task(path, name)) is not None:
        return rationale_task
    spec = spec or DataSpec()
    path = Path(path)
    examples: list[Example] = []
    kind = ""
    for line_no, row in read_rows(path):
        where = f"{path}:{line_no}"
        kind = kind or _infer_kind(row, spec, path)
        target_field = spec.label_field if kind == "classification" else spec.output_field
        text = _field(row, spec.input_field, where)
        target = _field(row, target_field, where).strip() if kind != "prompts" else ""
        gold = row.get(spec.source_field)
        examples.append(Example(text=text, target=target, source=where,
                                gold_source=str(gold) if gold is not None else ""))
    if not examples:
        raise LmadaptError(f"{path}: no examples; the file is empty")
    return Task(name=name or path.stem, kind=kind, examples=examples,
                labels=list(spec.labels), template=spec.template)


def load_train_eval(train: str | Path, eval_path: str | Path | None, spec: DataSpec,
                    eval_split: float = 0.2, seed: int = 0) -> tuple[Task, Task]:
    """Train and eval tasks: the eval file when given, else a seeded split of the train file."""
    train_task = load_task(train, spec)
    if eval_path is None:
        return split_task(train_task, eval_split, seed)
    eval_spec = DataSpec(**{**spec.__dict__, "labels": tuple(train_task.labels), "kind": train_task.kind})
    eval_task = load_task(eval_path, eval_spec, name=f"{train_task.name}:eval")
    return train_task, eval_task
