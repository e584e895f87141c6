"""peft-backed methods (lora, ia3, prefix, ptuning, prompt): exact trainable counts, plain-peft
loading, LoRA/IA3 merged == unmerged, left-padding invariance, several adapters on one base.

The shared matrix rows (train/save/load/adapted≠base) live in tests/test_matrix.py.
"""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from lmadapt.data import DataSpec, load_train_eval
from lmadapt.errors import LmadaptError
from lmadapt.merge import merge_run
from lmadapt.methods import get_method
from lmadapt.methods.base import RunContext, task_model_for
from lmadapt.methods.ia3.method import ia3_config
from lmadapt.methods.lora.method import lora_config
from lmadapt.methods.peft_common import AdapterSet
from lmadapt.methods.peft_common.build import install_prompt_hooks, peft_config_for
from lmadapt.methods.prefix.method import prefix_config
from lmadapt.methods.prompt.method import prompt_config
from lmadapt.methods.ptuning.method import ptuning_config
from lmadapt.models.load import ModelSpec, count_params
from lmadapt.run import load_run, tune
from lmadapt.train.config import TrainConfig
from lmadapt.utils import seed_everything

TRAIN = TrainConfig(epochs=1, batch_size=8, lr=3e-2, eval_each_epoch=False, warmup_ratio=0.0,
                    max_train_examples=32, max_eval_examples=8)
HEAD_BERT = (32 * 2 + 2) + (32 * 32 + 32)  # tiny BERT (hidden 32, 2 labels): classifier + pooler


@pytest.fixture(scope="module")
def tasks(toy_data):
    return load_train_eval(toy_data[0], toy_data[1], DataSpec())


def _wrapped(model_dir, task, tmp_path, builder):
    tm = task_model_for(task, RunContext(ModelSpec(model=str(model_dir)), TRAIN, tmp_path))
    tm.model = get_peft_model(tm.model, peft_config_for(tm, builder))
    install_prompt_hooks(tm.model, tm.kind)
    return tm


def _cfg(name, **kw):
    return get_method(name).config_class(**kw)


# closed forms; tiny BERT: d=32, FFN 64, 2 layers; tiny Llama: d=64, q 64→64, k/v 64→32, FFN 128, 2 layers
COUNTS = [
    ("lora", "tiny_bert", lambda c: lambda tm, tt: lora_config(c, tm, tt), {"lora_r": 4},
     2 * 2 * 4 * (32 + 32) + HEAD_BERT),
    ("lora", "tiny_llama", lambda c: lambda tm, tt: lora_config(c, tm, tt), {"lora_r": 4},
     2 * (4 * (64 + 64) + 4 * (64 + 32))),
    ("ia3", "tiny_bert", lambda c: lambda tm, tt: ia3_config(c, tm, tt), {}, 2 * (32 + 32 + 64) + HEAD_BERT),
    ("ia3", "tiny_llama", lambda c: lambda tm, tt: ia3_config(c, tm, tt), {}, 2 * (32 + 32 + 128)),
    ("prefix", "tiny_llama", lambda c: lambda tm, tt: prefix_config(c, tm, tt), {"prefix_virtual_tokens": 5},
     5 * 2 * 2 * 32),  # P · layers · (K, V) · kv width
    ("prompt", "tiny_bert", lambda c: lambda tm, tt: prompt_config(c, tm, tt), {"prompt_virtual_tokens": 5},
     5 * 32 + HEAD_BERT),
    ("prompt", "tiny_llama", lambda c: lambda tm, tt: prompt_config(c, tm, tt),
     {"prompt_virtual_tokens": 3, "prompt_init_text": "good or bad"}, 3 * 64),
    ("ptuning", "tiny_llama", lambda c: lambda tm, tt: ptuning_config(c, tm, tt),
     {"ptuning_virtual_tokens": 4, "ptuning_hidden": 16},  # embedding + MLP d→h→h→d
     4 * 64 + (64 * 16 + 16) + (16 * 16 + 16) + (16 * 64 + 64)),
]


@pytest.mark.parametrize("name,fixture,make,settings,expected", COUNTS,
                         ids=[f"{c[0]}-{c[1]}" for c in COUNTS])
def test_trainable_counts_closed_form(name, fixture, make, settings, expected, tasks, request, tmp_path):
    tm = _wrapped(request.getfixturevalue(fixture), tasks[0], tmp_path, make(_cfg(name, **settings)))
    assert count_params(tm.model)[0] == expected


def test_prefix_on_encoder_says_why(tiny_bert, tasks, tmp_path):
    with pytest.raises(LmadaptError, match="prefix"):
        get_method("prefix").fit(tasks[0], None, _cfg("prefix"), RunContext(ModelSpec(str(tiny_bert)), TRAIN, tmp_path))


@pytest.mark.parametrize("name", ["prompt", "ptuning", "prefix"])
def test_prompt_learning_ignores_left_padding(name, tiny_llama, tasks, tmp_path):
    """A text's label scores are the same alone and in a batch padded for a longer text."""
    builder = {"prompt": prompt_config, "ptuning": ptuning_config, "prefix": prefix_config}[name]
    cfg = _cfg(name)
    tm = _wrapped(tiny_llama, tasks[0], tmp_path, lambda t, tt: builder(cfg, t, tt))
    tm.model.eval()
    short, long = "good", "the movie was quite boring and the plot was dull"
    with torch.no_grad():
        alone = tm.label_scores([short])
        batched = tm.label_scores([short, long])
    torch.testing.assert_close(alone[0], batched[0], rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def lora_runs(tiny_llama, tiny_bert, tasks, tmp_path_factory):
    root = tmp_path_factory.mktemp("peft_runs")
    runs = {}
    for name, model, settings in [("lora", tiny_llama, {}), ("ia3", tiny_llama, {}), ("lora", tiny_bert, {}),
                                  ("prompt", tiny_llama, {})]:
        key = f"{name}-{'bert' if model == tiny_bert else 'llama'}"
        runs[key] = root / key
        tune(name, ModelSpec(str(model)), tasks[0], tasks[1], _cfg(name, **settings), TRAIN, runs[key])
    return runs


def _llama_batch():
    ids = torch.tensor([[5, 9, 12, 14, 20, 8], [5, 11, 13, 9, 7, 10]])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@pytest.mark.parametrize("kind", ["lora", "ia3"])
def test_merged_equals_unmerged(kind, lora_runs, tiny_llama, tmp_path):
    run = lora_runs[f"{kind}-llama"]
    adapted, _, _ = load_run(run)
    merged = AutoModelForCausalLM.from_pretrained(merge_run(run, tmp_path / "merged")).eval()
    assert not any("lora" in n or "ia3" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(merged(**_llama_batch()).logits, adapted.tm.model(**_llama_batch()).logits,
                                   rtol=1e-5, atol=1e-5)


def test_merge_refuses_in_one_line(lora_runs, tmp_path):
    with pytest.raises(LmadaptError, match="cannot merge a 'prompt' run") as err:
        merge_run(lora_runs["prompt-llama"], tmp_path / "x")
    assert "\n" not in str(err.value)


def test_plain_peft_loads_the_artifact(lora_runs, tiny_llama, tiny_bert):
    """The PEFT folders load with peft alone (no lmadapt) and give lmadapt's logits."""
    for key, run in lora_runs.items():
        if not key.startswith("lora"):
            continue
        adapted, _, _ = load_run(run)
        if "bert" in key:
            base = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
            ids = torch.tensor([[2, 9, 12, 14, 3]])
        else:
            base = AutoModelForCausalLM.from_pretrained(tiny_llama)
            ids = _llama_batch()["input_ids"]
        plain = PeftModel.from_pretrained(base, str(run / "artifact" / "adapter")).eval()
        with torch.no_grad():
            torch.testing.assert_close(plain(input_ids=ids).logits, adapted.tm.model(input_ids=ids).logits)


def test_adapter_set_switches_and_disables(lora_runs, tiny_llama, tasks, tmp_path):
    llama_lora = lora_runs["lora-llama"]
    base = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    with torch.no_grad():
        base_logits = base(**_llama_batch()).logits
    adapters = AdapterSet(AutoModelForCausalLM.from_pretrained(tiny_llama),
                          {"a": llama_lora / "artifact" / "adapter"})
    # a second LoRA adapter on the same base: the lora run's adapter under another name
    adapters.add("b", llama_lora / "artifact" / "adapter")
    assert adapters.names == ["a", "b"]
    with torch.no_grad():
        a = adapters.model(**_llama_batch()).logits
        adapters.use("b")
        b = adapters.model(**_llama_batch()).logits
        with adapters.disabled() as model:
            off = model(**_llama_batch()).logits
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(off, base_logits)
    assert not torch.allclose(a, base_logits)
    with pytest.raises(LmadaptError, match="no adapter named"):
        adapters.use("c")


# ---- the common matrix for the seven PEFT-suite methods ------------------------------------
# tests/test_matrix.py matches every parameter to a base value by name, which wrapped modules
# (base_layer, lora_A, adapters) do not have; this matrix maps wrapped names back instead.
MATRIX = [(m, f) for m in ("lora", "ia3", "ptuning", "prompt", "adapter", "unipelt")
          for f in ("tiny_bert", "tiny_llama")] + [("prefix", "tiny_llama")]
QUICK = TrainConfig(epochs=1, batch_size=8, lr=3e-2, eval_each_epoch=False, warmup_ratio=0.0)
WRAPPERS = ("base_model.model.", ".base_layer", ".base.", ".modules_to_save.default", ".original_module")


def _base_name(name: str) -> str:
    for piece in WRAPPERS:
        name = name.replace(piece, "." if piece.endswith(".") and piece.startswith(".") else "")
    return name


@pytest.mark.parametrize("method,fixture", MATRIX, ids=[f"{m}-{f.removeprefix('tiny_')}" for m, f in MATRIX])
def test_peft_matrix(method, fixture, tasks, request, tmp_path):
    """Frozen weights unchanged, save → load identical, adapted ≠ base."""
    spec = ModelSpec(str(request.getfixturevalue(fixture)))
    train_task, eval_task = tasks[0].subsample(16, 0), tasks[1].subsample(8, 0)
    texts = eval_task.texts()[:6]
    base_tm = task_model_for(train_task, RunContext(spec, QUICK, tmp_path))
    base_params = {n: p.detach().clone() for n, p in base_tm.model.named_parameters()}
    with torch.no_grad():
        base_scores = base_tm.label_scores(texts)
    record = tune(method, spec, train_task, eval_task, _cfg(method), QUICK, tmp_path / "run")
    assert record.trainable_params > 0 and record.artifact_bytes > 0
    loaded, _, _ = load_run(tmp_path / "run")
    seed_everything(QUICK.seed)  # as tune does before fit
    fresh, _ = get_method(method).fit(train_task, eval_task, _cfg(method), RunContext(spec, QUICK, tmp_path / "b"))
    torch.testing.assert_close(loaded.scores(texts), fresh.scores(texts), rtol=1e-4, atol=1e-4)
    for name, param in fresh.tm.model.named_parameters():
        key = _base_name(name)
        if not param.requires_grad and key in base_params:
            assert torch.equal(param.detach(), base_params[key]), f"frozen {name} changed"
    assert not torch.allclose(loaded.scores(texts), base_scores, atol=1e-5)
