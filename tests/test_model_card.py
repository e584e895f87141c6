"""Model cards (report/card.py) and label names in shared artifacts: every run's artifact/README.md
is a Hugging Face card whose YAML front matter holds the record's score and CI and never a local
path; an encoder classifier's PEFT folder and merged model carry id2label/label2id; the cards'
loading snippets run as written."""

import json
import re

import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from lmadapt.data.loaders import DataSpec, load_train_eval
from lmadapt.methods import get_method
from lmadapt.models.load import ModelSpec
from lmadapt.report.card import hub_model_id, model_card
from lmadapt.report.record import RunRecord
from lmadapt.run import load_run, tune
from lmadapt.train.config import TrainConfig

TRAIN = TrainConfig(epochs=1, batch_size=8, lr=3e-2, eval_each_epoch=False, warmup_ratio=0.0,
                    max_train_examples=32, max_eval_examples=8)
ID2LABEL = {0: "negative", 1: "positive"}  # the toy task's labels, sorted


@pytest.fixture(scope="module")
def runs(tiny_bert, tiny_llama, toy_data, tmp_path_factory):
    """A LoRA run on an encoder classifier, full fine-tuning of it, and zero-shot on a causal LM."""
    train, eval_task = load_train_eval(toy_data[0], toy_data[1], DataSpec())
    root = tmp_path_factory.mktemp("card_runs")
    out = {}
    for name, model in [("lora", tiny_bert), ("full", tiny_bert), ("zero-shot", tiny_llama)]:
        out[name] = root / name
        tune(name, ModelSpec(str(model)), train, eval_task, get_method(name).config_class(), TRAIN, out[name])
    return out


def front(text: str) -> dict:
    match = re.match(r"^---\n(.*?)\n---\n", text, re.S)
    assert match, "no YAML front matter"
    return yaml.safe_load(match.group(1))


def snippet_model(card: str, **paths: str):
    """Run the card's Python snippet with its placeholder paths replaced; returns its `model`."""
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    for placeholder, path in paths.items():
        assert f'"{placeholder}"' in code
        code = code.replace(f'"{placeholder}"', repr(str(path)))
    scope: dict = {}
    exec(code, scope)  # noqa: S102 - the card's own snippet, the thing under test
    return scope["model"]


def test_tune_card_holds_the_records_numbers(runs, tiny_bert):
    run = runs["lora"]
    text = (run / "artifact" / "README.md").read_text()
    record = json.loads((run / "record.json").read_text())
    meta = front(text)
    assert meta["library_name"] == "peft" and meta["pipeline_tag"] == "text-classification"
    assert meta["tags"] == ["lmadapt", "lora", "classification"]
    assert "base_model" not in meta and "datasets" not in meta  # a local model and local files
    assert str(tiny_bert) not in text and str(run) not in text  # no local path anywhere
    block = meta["lmadapt"]
    assert (block["score"], block["ci_low"], block["ci_high"]) == (record["score"], record["ci_low"], record["ci_high"])
    assert block["eval_examples"] == record["eval_examples"] == 8 and block["labels"] == ["negative", "positive"]
    assert block["created"] == record["created"]
    # the hub's own parser reads the model-index as an eval result with the record's score
    result = ModelCard(text).data.eval_results[0]
    assert (result.metric_type, result.metric_value, result.task_type) == ("accuracy", record["score"],
                                                                          "text-classification")
    assert f"{record['ci_low']:.4f} to {record['ci_high']:.4f}" in result.metric_name
    assert f"{record['trainable_params']:,} / {record['total_params']:,}" in text
    assert "`lora_r=8`" in text and "`epochs=1`" in text  # the settings


def test_card_replaces_peft_template_and_carries_labels(runs, tiny_bert):
    adapter = runs["lora"] / "artifact" / "adapter"
    card = (adapter / "README.md").read_text()
    assert card == (runs["lora"] / "artifact" / "README.md").read_text()
    assert "More Information Needed" not in card  # peft's empty template is gone
    labels = json.loads((adapter / "labels.json").read_text())
    assert labels == {"num_labels": 2, "id2label": {"0": "negative", "1": "positive"},
                      "label2id": {"negative": 0, "positive": 1}}
    assert not (adapter / "config.json").exists()  # it would make transformers take the folder for a full model
    # the card's snippet, as written: the label names, and the predictions lmadapt makes
    model = snippet_model(card, **{"path/to/adapter": adapter, "path/to/base-model": tiny_bert})
    assert model.config.id2label == ID2LABEL and model.config.label2id == {v: k for k, v in ID2LABEL.items()}
    adapted, _, _ = load_run(runs["lora"], device="cpu")
    texts = ["a good movie", "the plot was dull and boring"]
    batch = AutoTokenizer.from_pretrained(adapter)(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        ids = model(**batch).logits.argmax(-1).tolist()
    assert [model.config.id2label[i] for i in ids] == adapted.predict(texts, 2)


def test_merge_carries_labels_and_a_card(runs, run_cli, tmp_path):
    merged = tmp_path / "merged"
    code, err = run_cli(["merge", runs["lora"], "--out", merged])
    assert code == 0, err
    model = AutoModelForSequenceClassification.from_pretrained(merged)  # plain transformers
    assert model.config.id2label == ID2LABEL and model.config.label2id == {v: k for k, v in ID2LABEL.items()}
    card = (merged / "README.md").read_text()
    meta = front(card)
    assert meta["library_name"] == "transformers" and "merged" in meta["tags"] and meta["lmadapt"]["merged"]
    record = json.loads((runs["lora"] / "record.json").read_text())
    assert meta["lmadapt"]["score"] == record["score"] and str(runs["lora"]) not in card
    assert snippet_model(card, **{"path/to/model": merged}).config.id2label == ID2LABEL


def test_full_weights_and_lmadapt_only_artifacts(runs):
    full = (runs["full"] / "artifact" / "README.md").read_text()
    assert front(full)["library_name"] == "transformers"
    assert (runs["full"] / "artifact" / "model" / "README.md").read_text() == full
    model = snippet_model(full, **{"path/to/model": runs["full"] / "artifact" / "model"})
    assert model.config.id2label == ID2LABEL
    zero = (runs["zero-shot"] / "artifact" / "README.md").read_text()
    meta = front(zero)
    assert meta["library_name"] == "lmadapt" and "pipeline_tag" not in meta
    assert meta["tags"] == ["lmadapt", "zero-shot", "classification"]
    assert "lmadapt predict RUN" in zero and "```python" not in zero


def _card_for(run, model_ref: str, task_name: str = "train") -> dict:
    record = RunRecord.from_dict(json.loads((run / "record.json").read_text()))
    manifest = json.loads((run / "lmadapt.json").read_text())
    manifest = {**manifest, "model": {**manifest["model"], "model": model_ref},
                "task": {**manifest["task"], "name": task_name}}
    card = model_card(record, manifest, run / "artifact")
    assert card == model_card(record, manifest, run / "artifact")  # deterministic
    return front(card)


def test_base_model_is_a_hub_id_or_absent(runs, tmp_path, monkeypatch):
    run = runs["lora"]
    meta = _card_for(run, "smollm2-135m", task_name="rotten-tomatoes")  # pull names: no download
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and meta["datasets"] == ["rotten-tomatoes"]
    assert meta["model-index"][0]["results"][0]["dataset"]["type"] == "rotten-tomatoes"
    assert _card_for(run, "prajjwal1/bert-tiny")["base_model"] == "prajjwal1/bert-tiny"  # a hub id stays
    assert "base_model" not in _card_for(run, str(tmp_path / "gone"))  # a local path never
    local = tmp_path / "local"
    local.mkdir()
    (local / "config.json").write_text(json.dumps({"_name_or_path": "google-bert/bert-base-uncased"}))
    assert hub_model_id(str(local)) == "google-bert/bert-base-uncased"
    (local / "config.json").write_text(json.dumps({"_name_or_path": str(tmp_path / "elsewhere")}))
    assert hub_model_id(str(local)) is None
    monkeypatch.setenv("LMADAPT_HOME", str(tmp_path / "home"))
    pulled = tmp_path / "home" / "models" / "smollm2-135m"
    pulled.mkdir(parents=True)
    assert hub_model_id(str(pulled)) == "HuggingFaceTB/SmolLM2-135M-Instruct"  # a pulled folder
