"""Load a Task from JSONL, CSV, Parquet, a saved `datasets` dataset or a hub dataset id
(`org/name[:split]`, through `datasets.load_dataset`), with field mapping.

Every bad row is reported with its file and line, e.g. `train.jsonl:17: missing field 'label'`.
Files are UTF-8 (a leading BOM is dropped; other bytes are an error naming line and byte offset).
A field holds text or a number: lists, objects and bytes are refused, not stringified. A whole
number stored as a float (JSON `1.0`, a float Parquet column) reads as `1`, so it is one class
with `1`; two label strings that spell one number (`"1"` and `"1.0"`) are refused by the Task.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from lmadapt.data.chat import alpaca_messages, chat_example, detect_format, parse_messages
from lmadapt.data.task import DataWarning, Example, Task, duplicate_count, overlap_count, split_task
from lmadapt.errors import LmadaptError

BOM = b"\xef\xbb\xbf"  # UTF-8 byte order mark (Excel's "CSV UTF-8", some editors)

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
    metric: str = ""  # how predictions are scored (eval/metrics.py); the kind's default when empty
    format: str = "auto"  # auto | messages | alpaca | prompt_completion | text (data/chat.py)
    chat_template: str = "auto"  # chat data: auto (the tokenizer's) | none | PATH to a jinja template
    train_on: str = "all"  # chat data: loss on every assistant turn (all) or only the last (last)
    stop: tuple[str, ...] = ()  # generation ends at these strings (stop=, Task.stop)


def _not_utf8(path: Path, line_no: int, column: int, offset: int, bad: bytes) -> LmadaptError:
    return LmadaptError(f"{path}:{line_no}: not valid UTF-8 (byte 0x{bad[:1].hex()} at byte {column} "
                        f"of the line, file offset {offset}); re-save the file as UTF-8")


def _rows_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    offset = 0
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            skip = len(BOM) if line_no == 1 and raw.startswith(BOM) else 0
            try:
                line = raw[skip:].decode("utf-8")
            except UnicodeDecodeError as err:
                at = skip + err.start
                raise _not_utf8(path, line_no, at + 1, offset + at, raw[at:]) from None
            offset += len(raw)
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
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")  # a BOM (Excel's "CSV UTF-8") is not part of the first name
    except UnicodeDecodeError as err:
        at = err.start + (len(BOM) if data.startswith(BOM) else 0)
        line_start = data.rfind(b"\n", 0, at) + 1
        raise _not_utf8(path, data.count(b"\n", 0, at) + 1, at - line_start + 1, at, data[at:]) from None
    # the csv module refuses fields over 128 KB by default; long documents are ordinary data
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        for row in reader:
            yield reader.line_num, row
    except csv.Error as err:
        raise LmadaptError(f"{path}:{reader.line_num}: not valid CSV ({err}); fix the line") from None


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
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            rows = iter(pq.read_table(path).to_pylist())
        except (pa.ArrowException, OSError) as err:
            why = (str(err).splitlines() or [type(err).__name__])[0]
            raise LmadaptError(f"{path}: not a readable Parquet file ({why})") from None
    yield from enumerate(rows, start=1)


# A hub dataset id (`org/name`), optionally with `:split` or `:config:split` (a split may be sliced,
# `train[:100]`); never a file name (no data suffix) or a path (no leading `.`, `/`, `~`).
_HUB_ID = re.compile(r"^(?P<id>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?::(?P<rest>[^/\\]+))?$")
_DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".txt", ".tsv", ".arrow")


def hub_ref(ref: str) -> tuple[str, str | None, str | None] | None:
    """(dataset id, config, split) when ref reads as a hub dataset id (`org/name[:split]`,
    `org/name:config:split`), else None. Local paths and pull names are resolved before this."""
    match = _HUB_ID.match(str(ref))
    if match is None or match["id"].lower().endswith(_DATA_SUFFIXES):
        return None
    parts = re.split(r":(?![^\[]*\])", match["rest"]) if match["rest"] else []
    if len(parts) > 2 or any(not p for p in parts):
        return None
    config, split = (None, parts[0] if parts else None) if len(parts) < 2 else parts
    return match["id"], config, split


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or HF_DATASETS_OFFLINE) is set to a true value."""
    return any(os.environ.get(var, "").strip().upper() in ("1", "ON", "YES", "TRUE")
               for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _no_hub(ref: str, why: str) -> LmadaptError:
    return LmadaptError(f"cannot load hub dataset {ref!r}: {why}; use a named dataset (`lmadapt pull list`, "
                        "then `lmadapt pull data NAME` while online) or a local .jsonl/.csv/.parquet file or "
                        "saved datasets folder")


def _load_hub(ref: str, dataset_id: str, config: str | None, split: str | None):
    """`datasets.load_dataset` on the hub id; a split (default: train, or the only one) as a
    Dataset. Failures are one line: offline, unreachable, no such dataset, no such split."""
    import datasets

    offline = "the hub is offline (HF_HUB_OFFLINE=1) and it is not in the datasets cache"
    if hub_offline() and not datasets.config.HF_HUB_OFFLINE:  # set after datasets was imported
        raise _no_hub(ref, offline)
    if not hub_offline():
        probe_hub(ref, dataset_id)
    try:
        data = datasets.load_dataset(dataset_id, config, split=split)
    except datasets.exceptions.DatasetNotFoundError:
        if hub_offline():
            raise _no_hub(ref, offline) from None
        raise LmadaptError(f"no dataset {dataset_id!r} on the hub (or it is private/gated: log in with "
                           "`hf auth login`); check the id, or pass a local file") from None
    except (ConnectionError, TimeoutError, OSError) as err:
        if type(err).__name__ in ("FileNotFoundError", "DataFilesNotFoundError"):
            raise LmadaptError(f"hub dataset {dataset_id!r} has no data files for {ref!r} "
                               f"({_first_line(err)})") from None
        raise _no_hub(ref, offline if hub_offline() else f"the hub is unreachable ({type(err).__name__})") from None
    except ValueError as err:  # unknown split or config: datasets names the choices
        raise LmadaptError(f"hub dataset {ref!r}: {_first_line(err)}; use {dataset_id}:SPLIT or "
                           f"{dataset_id}:CONFIG:SPLIT") from None
    if isinstance(data, datasets.DatasetDict):
        names = list(data)
        if "train" not in data and len(names) != 1:
            raise LmadaptError(f"hub dataset {dataset_id!r} has splits {', '.join(names)} and none is train; "
                               f"pick one, e.g. {dataset_id}:{names[0]}")
        data = data["train" if "train" in data else names[0]]
    if isinstance(data, datasets.IterableDataset) or not hasattr(data, "__len__"):
        raise LmadaptError(f"hub dataset {ref!r} loaded as a stream; pass a split, e.g. {dataset_id}:train")
    return data


def probe_hub(ref: str, dataset_id: str) -> None:
    """One quick request for the dataset's card: a missing dataset or an unreachable hub is a
    one-line error at once (datasets itself retries for about 25 s, printing each try)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    try:
        HfApi().dataset_info(dataset_id, timeout=10)
    except RepositoryNotFoundError:
        raise LmadaptError(f"no dataset {dataset_id!r} on the hub (or it is private/gated: log in with "
                           "`hf auth login`); check the id, or pass a local file") from None
    except HfHubHTTPError:
        return  # e.g. gated: load_dataset says what it needs
    except Exception as err:  # the HTTP client's network errors have no common public base
        raise _no_hub(ref, f"the hub is unreachable ({type(err).__name__})") from None


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


def dataset_rows(data) -> Iterator[tuple[int, dict]]:
    """A `datasets.Dataset` as (1-based row number, dict) rows, the shape every reader yields."""
    for row_no, row in enumerate(data, start=1):
        yield row_no, dict(row)


def read_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """Rows of a data file as (line number, dict); the format comes from the suffix. A hub
    dataset id (`org/name[:split]`, see `hub_ref`) that is no local path loads through
    `datasets.load_dataset` (row numbers for line numbers)."""
    if not path.exists() and (hub := hub_ref(str(path))) is not None:
        return dataset_rows(_load_hub(str(path), *hub))
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
    if isinstance(value, (list, tuple, dict, bytes, bytearray, memoryview)):
        kind = "bytes" if isinstance(value, (bytes, bytearray, memoryview)) else f"a {type(value).__name__}"
        raise LmadaptError(f"{where}: field {name!r} holds {kind} ({_preview(value)}), not text or a "
                           "number; store one string per row")
    text = value if isinstance(value, str) else _number_text(value)
    if not text.strip():
        raise LmadaptError(f"{where}: field {name!r} is empty; fill or drop the row")
    return text


def _number_text(value: object) -> str:
    """A scalar as text; a whole float is written as an integer, since JSON's and Parquet's 1 and
    1.0 are one number (a label column read as float must not become the class '1.0' beside '1')."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _preview(value: object, width: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _infer_kind(first: dict, spec: DataSpec, path: Path) -> str:
    if spec.kind != "auto":
        return spec.kind
    if spec.label_field in first:
        return "classification"
    if spec.output_field in first:
        return "generation"
    raise LmadaptError(f"{path}: no {spec.label_field!r} or {spec.output_field!r} field; "
                       "name the target with --label-field or --output-field")


# A method's reader for a data layout of its own (its `load_task`): a Task, or None when `ref`
# is not that layout. Readers are tried before the generic JSONL/CSV/Parquet readers.
Reader = Callable[[str | Path, "DataSpec", str | None], Task | None]


def load_task(path: str | Path, spec: DataSpec | None = None, name: str | None = None,
              readers: Sequence[Reader] = ()) -> Task:
    """Read a data file into a Task, validating every row; `readers` (the methods' own layouts,
    e.g. distill's rationale files) are tried first."""
    spec = spec or DataSpec()
    for read in readers:
        if (task := read(path, spec, name)) is not None:
            return task
    path = Path(path)
    examples: list[Example] = []
    kind = fmt = ""
    for line_no, row in read_rows(path):
        where = f"{path}:{line_no}"
        fmt = fmt or detect_format(row, spec.format, spec.input_field, where)
        if fmt != "text":
            kind = kind or _generation_kind(spec, fmt, path)
            examples.append(_formatted_example(row, fmt, spec, where))
            continue
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
                labels=list(spec.labels), template=spec.template, format=fmt, metric=spec.metric,
                chat_template=_chat_template(spec.chat_template), train_on=spec.train_on, stop=spec.stop)


def _generation_kind(spec: DataSpec, fmt: str, path: Path) -> str:
    if spec.kind not in ("auto", "generation"):
        raise LmadaptError(f"{path}: {fmt} rows make a generation task, not {spec.kind}; drop --kind")
    return "generation"


def _formatted_example(row: dict, fmt: str, spec: DataSpec, where: str) -> Example:
    """One messages / alpaca / prompt-completion row as an Example (chat rows: a ChatExample)."""
    if fmt == "prompt_completion":
        return Example(text=_field(row, "prompt", where), target=_field(row, "completion", where).strip(),
                       source=where)
    if fmt == "messages":
        if "messages" not in row:
            raise LmadaptError(f"{where}: no 'messages' field (--format messages)")
        return chat_example(parse_messages(row["messages"], where), where)
    instruction = spec.input_field if spec.input_field in row else "instruction"
    return chat_example(alpaca_messages(row, where, instruction, spec.output_field), where)


def _chat_template(setting: str) -> str:
    """chat_template=auto | none | PATH: a path becomes the template's text (kept in the run)."""
    if setting in ("auto", "none"):
        return setting
    path = Path(setting)
    if not path.is_file():
        raise LmadaptError(f"chat_template={setting}: no such file; use auto, none or a path to a jinja template")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise LmadaptError(f"chat_template={setting}: cannot read it ({err})") from None


def load_train_eval(train: str | Path, eval_path: str | Path | None, spec: DataSpec,
                    eval_split: float = 0.2, seed: int = 0, readers: Sequence[Reader] = ()) -> tuple[Task, Task]:
    """Train and eval tasks: the eval file when given, else a seeded split of the train file.

    Warns (DataWarning) with the count when train repeats texts, and when an --eval file shares
    texts with train (`overlap_count(train, eval)` gives that count for the run record); a split
    carved from train never shares a text with it.
    """
    train_task = load_task(train, spec, readers=readers)
    if dups := duplicate_count(train_task):
        warnings.warn(f"{train}: {dups} of {len(train_task.examples)} rows repeat an earlier row's "
                      "text (duplicates weigh more in training)", DataWarning, stacklevel=2)
    if eval_path is None:
        return split_task(train_task, eval_split, seed)
    eval_spec = DataSpec(**{**spec.__dict__, "labels": tuple(train_task.labels), "kind": train_task.kind})
    eval_task = load_task(eval_path, eval_spec, name=f"{train_task.name}:eval", readers=readers)
    if shared := overlap_count(train_task, eval_task):
        warnings.warn(f"{eval_path}: {shared} of {len(eval_task.examples)} eval rows have a text that "
                      f"is also in the training data {train}; their scores overstate the model",
                      DataWarning, stacklevel=2)
    return train_task, eval_task
