"""Task loading from every supported format, field mapping, splits and row validation."""

from __future__ import annotations

import json
import re

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


# ---- data edge cases (issue 11, class 7) ----------------------------------------------------------

def _one_line_error(path, spec=None):
    with pytest.raises(LmadaptError) as info:
        load_task(path, spec)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("name, content, where", [
    ("d.jsonl", b'{"text": "a", "label": "x"}\n{"text": "caf\xe9", "label": "y"}\n',
     r"d\.jsonl:2: not valid UTF-8 \(byte 0xe9 at byte 14 of the line, file offset 41\)"),
    ("d.jsonl", b'\xef\xbb\xbf{"text": "a\xff", "label": "x"}\n',
     r"d\.jsonl:1: not valid UTF-8 \(byte 0xff at byte 15 of the line, file offset 14\)"),
    ("d.csv", b"text,label\nok,x\ncaf\xe9 au lait,y\n",
     r"d\.csv:3: not valid UTF-8 \(byte 0xe9 at byte 4 of the line, file offset 19\)"),
])
def test_non_utf8_bytes_name_file_line_and_offset(tmp_path, name, content, where):
    path = tmp_path / name
    path.write_bytes(content)
    assert re.search(where, _one_line_error(path))


def test_csv_with_bom_and_huge_fields_loads(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbftext,label\r\nhello,x\r\nbye,y\r\n")  # Excel's "CSV UTF-8"
    task = load_task(path)  # the BOM is not part of the first field name 'text'
    assert task.texts() == ["hello", "bye"] and task.labels == ["x", "y"]

    long_text = "word " * 60_000  # 300 KB in one field: over the csv module's 128 KB default
    path = tmp_path / "long.csv"
    path.write_text(f'text,label\n"{long_text}",x\nshort,y\n', encoding="utf-8")
    task = load_task(path)
    assert task.texts() == [long_text, "short"]


def test_not_parquet_named_parquet_is_one_line(tmp_path):
    path = tmp_path / "d.parquet"
    path.write_text('{"text": "a", "label": "x"}\n')
    assert _one_line_error(path).startswith(f"{path}: not a readable Parquet file")


def test_numeric_labels_one_class_or_error(tmp_path):
    import pandas as pd

    # JSON numbers 1 and 1.0 are one number: one class '1' (and the string "1" joins it)
    path = tmp_path / "n.jsonl"
    path.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": 1.0}\n'
                    '{"text": "c", "label": "1"}\n{"text": "d", "label": 0.0}\n')
    task = load_task(path)
    assert task.labels == ["0", "1"] and task.targets() == ["1", "1", "1", "0"]
    # a float label column (pandas writes 1.0) reads as the same classes as an int one
    pd.DataFrame({"text": ["a", "b", "c"], "label": [1.0, 0.0, 1.0]}).to_parquet(tmp_path / "f.parquet")
    assert load_task(tmp_path / "f.parquet").labels == ["0", "1"]
    # two strings spelling one number are refused, naming both rows
    for name, rows in (("s.jsonl", '{"text": "a", "label": "1"}\n{"text": "b", "label": "1.0"}\n'),
                       ("m.jsonl", '{"text": "a", "label": 1.0}\n{"text": "b", "label": "1.0"}\n')):
        (tmp_path / name).write_text(rows)
        message = _one_line_error(tmp_path / name)
        assert f"'1' ({tmp_path / name}:1) and '1.0' ({tmp_path / name}:2) are the same number" in message
    (tmp_path / "s.csv").write_text("text,label\na,1\nb,1.0\nc,0\n")
    assert "are the same number" in _one_line_error(tmp_path / "s.csv")


@pytest.mark.parametrize("row, message", [
    ({"text": "a", "label": ["x", "y"]}, r"d\.jsonl:1: field 'label' holds a list \(\['x', 'y'\]\)"),
    ({"text": ["a", "b"], "label": "x"}, r"d\.jsonl:1: field 'text' holds a list"),
    ({"text": {"q": "a"}, "label": "x"}, r"d\.jsonl:1: field 'text' holds a dict"),
    ({"text": "a", "label": {"name": "x"}}, r"d\.jsonl:1: field 'label' holds a dict"),
])
def test_list_or_dict_values_are_refused(tmp_path, row, message):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(row) + "\n")
    assert re.search(message, _one_line_error(path))


def test_bytes_values_are_refused(tmp_path):
    import pandas as pd

    pd.DataFrame({"text": [b"ab", b"cd"], "label": ["x", "y"]}).to_parquet(tmp_path / "b.parquet")
    message = _one_line_error(tmp_path / "b.parquet")
    assert message.startswith(f"{tmp_path / 'b.parquet'}:1: field 'text' holds bytes (b'ab')")
    pd.DataFrame({"text": ["a", "b"], "label": [b"x", b"y"]}).to_parquet(tmp_path / "l.parquet")
    assert "field 'label' holds bytes" in _one_line_error(tmp_path / "l.parquet")


def test_config_folder_missing_or_bad_yaml_is_one_line(tmp_path):
    from lmadapt.config import load_yaml

    bad = {"folder": tmp_path, "missing": tmp_path / "nope.yaml"}
    (tmp_path / "bad.yaml").write_text("lr: 1e-4\n epochs: [2\nseed: 1\n")
    (tmp_path / "latin1.yaml").write_bytes(b"template: caf\xe9 {text}\n")
    (tmp_path / "list.yaml").write_text("- lr\n- 1e-4\n")
    expected = {"folder": "is a folder", "missing": "does not exist",
                "bad.yaml": r"bad\.yaml:2: invalid YAML", "latin1.yaml": "not valid UTF-8",
                "list.yaml": "expected a mapping"}
    for key, pattern in expected.items():
        path = bad.get(key, tmp_path / key)
        with pytest.raises(LmadaptError, match=pattern) as info:
            load_yaml(path)
        assert "\n" not in str(info.value)


def test_config_folder_via_cli_is_one_line_and_nonzero(tmp_path, toy_data):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "lmadapt", "tune", "--method", "head", "--model", "x",
                             "--train", str(toy_data[0]), "--out", str(tmp_path / "run"),
                             "--config", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: config file {tmp_path} is a folder")
    assert not (tmp_path / "run").exists()


def _rows(texts_labels):
    return "".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in texts_labels)


def test_duplicate_texts_warn_and_split_keeps_copies_together(tmp_path):
    from lmadapt.data import DataWarning, overlap_count

    rows = [(f"text {i % 10}", "ab"[i % 2]) for i in range(30)]  # 10 texts, 3 copies each
    path = tmp_path / "dup.jsonl"
    path.write_text(_rows(rows))
    for seed in range(5):
        with pytest.warns(DataWarning, match=r"dup\.jsonl: 20 of 30 rows repeat an earlier row's text"):
            train, evals = load_train_eval(path, None, DataSpec(), eval_split=0.2, seed=seed)
        assert not set(train.texts()) & set(evals.texts())
        assert overlap_count(train, evals) == 0
        assert len(train.examples) + len(evals.examples) == 30 and len(evals.examples) == 6


def test_split_without_duplicates_is_unchanged(toy_data):
    import random

    from lmadapt.data import split_task

    task = load_task(toy_data[0])
    train, evals = split_task(task, 0.25, seed=3)
    order = list(range(64))
    random.Random(3).shuffle(order)  # the split before it learned about duplicates
    assert [ex.source for ex in evals.examples] == [task.examples[i].source for i in sorted(order[:16])]


def test_split_of_one_repeated_text_is_one_line(tmp_path):
    path = tmp_path / "same.jsonl"
    path.write_text(_rows([("same", "a"), ("same", "b"), ("same", "a")]))
    with pytest.warns(UserWarning), pytest.raises(LmadaptError, match="too few distinct texts"):
        load_train_eval(path, None, DataSpec(), eval_split=0.3)


def test_eval_file_overlapping_train_is_counted(tmp_path):
    from lmadapt.data import DataWarning, overlap_count

    train, evals = tmp_path / "t.jsonl", tmp_path / "e.jsonl"
    train.write_text(_rows([("a", "x"), ("b", "y"), ("c", "x")]))
    evals.write_text(_rows([("a", "x"), ("a", "x"), ("d", "y"), ("b", "x")]))
    with pytest.warns(DataWarning, match=r"e\.jsonl: 3 of 4 eval rows have a text that is also in"):
        train_task, eval_task = load_train_eval(train, evals, DataSpec())
    assert overlap_count(train_task, eval_task) == 3
    evals.write_text(_rows([("d", "y")]))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no duplicates, no overlap: no warning
        assert overlap_count(*load_train_eval(train, evals, DataSpec())) == 0
