"""Task loading from every supported format, field mapping, splits and row validation."""

from __future__ import annotations

import json

import pytest

from lmadapt.data import DataSpec, load_task, load_train_eval
from lmadapt.errors import LmadaptError

ROWS = [{"review": "good film", "sentiment": "pos"}, {"review": "bad film", "sentiment": "neg"},
        {"review": "fine film", "sentiment": "pos"}, {"review": "dull film", "sentiment": "neg"}]
SPEC = DataSpec(input_field="review", label_field="sentiment")


def test_jsonl_csv_parquet_datasets_agree(tmp_path):
    import datasets
    import pandas as pd

    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    pd.DataFrame(ROWS).to_csv(tmp_path / "d.csv", index=False)
    pd.DataFrame(ROWS).to_parquet(tmp_path / "d.parquet")
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "hf"))
    tasks = [load_task(tmp_path / name, SPEC) for name in ("d.jsonl", "d.csv", "d.parquet", "hf")]
    for task in tasks:
        assert task.kind == "classification" and task.labels == ["neg", "pos"]
        assert task.texts() == [r["review"] for r in ROWS]


def test_generation_kind_inferred(tmp_path):
    path = tmp_path / "gen.jsonl"
    path.write_text(json.dumps({"text": "2+2", "output": "4"}) + "\n")
    task = load_task(path)
    assert task.kind == "generation" and task.metric == "exact_match"


def test_eval_split_is_seeded_and_disjoint(toy_data):
    train_a, eval_a = load_train_eval(toy_data[0], None, DataSpec(), eval_split=0.25, seed=3)
    train_b, eval_b = load_train_eval(toy_data[0], None, DataSpec(), eval_split=0.25, seed=3)
    assert eval_a.texts() == eval_b.texts() and len(eval_a.examples) == 16
    sources = {ex.source for ex in train_a.examples}
    assert not sources & {ex.source for ex in eval_a.examples}


@pytest.mark.parametrize("content, message", [
    ('{"text": "a", "label": "x"}\n{"text": "b", "label": \n', r"d\.jsonl:2: not valid JSON"),
    ('{"text": "a", "label": "x"}\n{"txt": "b", "label": "y"}\n', r"d\.jsonl:2: missing field 'text'"),
    ('{"text": "a", "label": "x"}\n{"text": "  ", "label": "y"}\n', r"d\.jsonl:2: field 'text' is empty"),
    ("", r"no examples"),
    ('["a", "b"]\n', r"d\.jsonl:1: expected a JSON object"),
])
def test_bad_rows_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "d.jsonl"
    path.write_text(content)
    with pytest.raises(LmadaptError, match=message):
        load_task(path)


def test_eval_label_outside_train_label_set(tmp_path):
    train, evals = tmp_path / "t.jsonl", tmp_path / "e.jsonl"
    train.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n')
    evals.write_text('{"text": "c", "label": "z"}\n')
    with pytest.raises(LmadaptError, match=r"e\.jsonl:1: label 'z' is not in the label set"):
        load_train_eval(train, evals, DataSpec())


def test_missing_file_and_unsupported_type(tmp_path):
    with pytest.raises(LmadaptError, match="does not exist"):
        load_task(tmp_path / "nope.jsonl")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(LmadaptError, match="unsupported file type"):
        load_task(tmp_path / "x.txt")
