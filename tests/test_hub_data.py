"""Hub datasets (issue 13, item 6): `--train org/name[:split]` loads through `datasets.load_dataset`
when the hub is reachable; offline it is one line naming `lmadapt pull` and local files. No test
here touches the network: `datasets.load_dataset` and the hub probe are replaced."""

from __future__ import annotations

import json

import datasets
import pytest

import lmadapt.data.loaders as loaders
from lmadapt.data import load_task
from lmadapt.data.loaders import hub_ref
from lmadapt.errors import LmadaptError
from tiny import toy_rows, write_jsonl

CHAT = [{"messages": [{"role": "user", "content": "good film"}, {"role": "assistant", "content": "yes"}]},
        {"messages": [{"role": "user", "content": "bad film"}, {"role": "assistant", "content": "no"}]}]


@pytest.fixture
def hub(monkeypatch):
    """An online hub holding one dataset, `org/toy` (train and test splits); returns the calls."""
    calls: list[tuple] = []
    splits = {"train": datasets.Dataset.from_list(toy_rows(6, seed=1)),
              "test": datasets.Dataset.from_list(toy_rows(4, seed=2)),
              }
    chat = datasets.Dataset.from_list(CHAT)

    def load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        if path == "org/chat":
            return chat if split else datasets.DatasetDict({"train": chat})
        if path != "org/toy":
            raise datasets.exceptions.DatasetNotFoundError(f"Dataset '{path}' doesn't exist on the Hub")
        if split is None:
            return datasets.DatasetDict(splits)
        if split not in splits:
            raise ValueError(f'Unknown split "{split}". Should be one of {list(splits)}.')
        return splits[split]

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.setattr(loaders, "probe_hub", lambda ref, dataset_id: None)
    return calls


def test_hub_ids_are_told_from_paths():
    assert hub_ref("org/name") == ("org/name", None, None)
    assert hub_ref("org/name:test") == ("org/name", None, "test")
    assert hub_ref("openai/gsm8k:main:train[:100]") == ("openai/gsm8k", "main", "train[:100]")
    for path in ["data/train.jsonl", "./org/name", "/abs/org", "~/org/name", "a/b/c", "name", "org/x.csv"]:
        assert hub_ref(path) is None, path


def test_a_hub_dataset_maps_to_rows(hub):
    task = load_task("org/toy")  # no split: train
    expected = toy_rows(6, seed=1)
    assert [(ex.text, ex.target) for ex in task.examples] == [(r["text"], r["label"]) for r in expected]
    assert task.kind == "classification" and task.examples[0].source == "org/toy:1"
    test = load_task("org/toy:test")
    assert [ex.text for ex in test.examples] == [r["text"] for r in toy_rows(4, seed=2)]
    assert hub == [("org/toy", None, None), ("org/toy", None, "test")]
    chat = load_task("org/chat:train")  # list-of-dict fields come through as messages
    assert chat.format == "messages" and [ex.target for ex in chat.examples] == ["yes", "no"]


def test_hub_errors_are_one_line(hub):
    with pytest.raises(LmadaptError, match=r"hub dataset 'org/toy:dev': Unknown split \"dev\""):
        load_task("org/toy:dev")
    with pytest.raises(LmadaptError, match="no dataset 'org/missing' on the hub"):
        load_task("org/missing")
    with pytest.raises(LmadaptError, match="data file data/train.jsonl does not exist"):
        load_task("data/train.jsonl")  # a path, never the hub
    assert all(call[0] != "data/train.jsonl" for call in hub)


def test_an_unreachable_hub_names_pull_and_local_files(hub, monkeypatch):
    def unreachable(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'org/toy' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(LmadaptError) as err:
        load_task("org/toy:train")
    message = str(err.value)
    assert "the hub is unreachable" in message and "lmadapt pull data NAME" in message
    assert "local .jsonl/.csv/.parquet file" in message and "\n" not in message


def test_offline_is_one_line_naming_pull_and_local_files(run_cli, tiny_llama, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)  # as if set after datasets' import
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("went to the hub offline"))
    with pytest.raises(LmadaptError, match=r"hub is offline \(HF_HUB_OFFLINE=1\)"):
        load_task("org/toy")
    # datasets itself offline: its cache is tried; a miss is the same one line
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: (_ for _ in ()).throw(
        ConnectionError("Couldn't reach 'org/toy' on the Hub (offline mode is enabled)")))
    with pytest.raises(LmadaptError, match=r"hub is offline \(HF_HUB_OFFLINE=1\) and it is not in the datasets cache"):
        load_task("org/toy")
    evals = write_jsonl(tmp_path / "eval.jsonl", toy_rows(4))
    code, err = run_cli(["tune", "--method", "zero-shot", "--model", tiny_llama, "--train", "someorg/somedata:train",
                         "--eval", evals, "--out", tmp_path / "o"])
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err
    assert "'someorg/somedata:train'" in lines[0] and "lmadapt pull data NAME" in lines[0]
    assert "local .jsonl/.csv/.parquet file or saved datasets folder" in lines[0]


def test_tune_trains_and_evaluates_on_hub_splits(run_cli, hub, tiny_llama, tmp_path):
    out = tmp_path / "run"
    code, err = run_cli(["tune", "--method", "zero-shot", "--model", tiny_llama, "--train", "org/toy",
                         "--eval", "org/toy:test", "--out", out])
    assert code == 0, err
    record = json.loads((out / "record.json").read_text())
    assert record["train_examples"] == 6 and record["eval_examples"] == 4
