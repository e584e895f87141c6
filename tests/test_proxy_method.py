"""proxy (proxy-tuning as a method) on a pair of tiny Llamas that share one tokenizer."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from lmadapt.data import DataSpec, load_task, load_train_eval
from lmadapt.errors import LmadaptError
from lmadapt.methods import get_method
from lmadapt.methods.base import RunContext, task_model_for
from lmadapt.methods.proxy import ProxyConfig
from lmadapt.methods.proxy.method import ProxyAdapted, alpha_predictions, mean_label_margins
from lmadapt.models.load import ModelSpec
from lmadapt.run import load_run, tune
from lmadapt.train.config import TrainConfig
from tiny import toy_rows, write_jsonl

TRAIN = TrainConfig(epochs=1, batch_size=8, lr=3e-3, eval_each_epoch=False, warmup_ratio=0.0,
                    max_train_examples=32, max_eval_examples=8)


def make_small_llama(folder, tokenizer_from, extra_token: str = "", seed: int = 1):
    """A 1-layer Llama (hidden 32) with the tokenizer saved in `tokenizer_from` (+ one token)."""
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_from))
    if extra_token:
        tokenizer.add_tokens([extra_token])
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def small_llama(tiny_llama, tmp_path_factory):
    return make_small_llama(tmp_path_factory.mktemp("small"), tiny_llama)


@pytest.fixture(scope="module")
def tasks(toy_data):
    return load_train_eval(toy_data[0], toy_data[1], DataSpec())


@pytest.fixture(scope="module")
def two_token_task(tmp_path_factory):
    """Labels of two tokens each ('very good' / 'very bad'): the sequence-scoring path."""
    rows = [{"text": r["text"], "label": "very good" if r["label"] == "positive" else "very bad"}
            for r in toy_rows(16, seed=4)]
    return load_task(write_jsonl(tmp_path_factory.mktemp("two") / "t.jsonl", rows))


def _base_scores(task, spec, tmp_path, texts):
    tm = task_model_for(task, RunContext(spec, TRAIN, tmp_path))
    return tm.label_scores(texts)


@pytest.mark.parametrize("which", ["one-token labels", "two-token labels"])
def test_alpha_zero_equals_base_scoring(which, tiny_llama, small_llama, tasks, two_token_task, tmp_path):
    task = tasks[0] if which == "one-token labels" else two_token_task
    spec = ModelSpec(model=str(tiny_llama))
    cfg = ProxyConfig(proxy_small=str(small_llama), proxy_alpha=0.0)
    adapted, _ = get_method("proxy").fit(task, None, cfg, RunContext(spec, TRAIN, tmp_path))
    texts = task.texts()[:8]
    torch.testing.assert_close(adapted.scores(texts), _base_scores(task, spec, tmp_path, texts),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("expert_method", ["lora", "full"])
def test_untrained_expert_equals_base_scoring(expert_method, tiny_llama, small_llama, tasks, tmp_path):
    task, texts = tasks[0], tasks[1].texts()[:8]
    spec, small_spec = ModelSpec(model=str(tiny_llama)), ModelSpec(model=str(small_llama))
    base = task_model_for(task, RunContext(spec, TRAIN, tmp_path))
    expert = task_model_for(task, RunContext(small_spec, TRAIN, tmp_path))
    anti = None
    if expert_method == "lora":  # LoRA's B starts at zero: expert == anti-expert
        expert.model = get_peft_model(expert.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    else:
        anti = task_model_for(task, RunContext(small_spec, TRAIN, tmp_path)).model
    cfg = ProxyConfig(proxy_small=str(small_llama), expert_method=expert_method)
    adapted = ProxyAdapted(base, expert, anti, cfg, str(small_llama))
    torch.testing.assert_close(adapted.scores(texts), base.label_scores(texts), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("expert_method", ["lora", "full"])
def test_tune_then_load_gives_equal_scores(expert_method, tiny_llama, small_llama, tasks, tmp_path):
    train_task, eval_task = tasks
    spec = ModelSpec(model=str(tiny_llama))
    cfg = ProxyConfig(proxy_small=str(small_llama), expert_method=expert_method)
    record = tune("proxy", spec, train_task, eval_task, cfg, TRAIN, tmp_path / "run")
    assert record.trainable_params > 0 and record.train_steps == 4
    assert {"base_score", "expert_score", "expert_ci_low", "proxy_alpha"} <= set(record.extra)
    for part in ("base", "expert"):  # per example, in eval order, averaging to the part's score
        values = record.extra[f"{part}_per_example"]
        assert len(values) == record.eval_examples == 8
        assert sum(values) / len(values) == pytest.approx(record.extra[f"{part}_score"])
    assert (tmp_path / "run" / "artifact" / "proxy.json").exists()
    loaded, _, _ = load_run(tmp_path / "run")
    same_data = train_task.subsample(TRAIN.max_train_examples, TRAIN.seed)  # what tune trained on
    fresh, _ = get_method("proxy").fit(same_data, None, cfg, RunContext(spec, TRAIN, tmp_path / "again"))
    texts = eval_task.texts()[:8]
    torch.testing.assert_close(loaded.scores(texts), fresh.scores(texts), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(loaded.scores(texts), _base_scores(train_task, spec, tmp_path, texts), atol=1e-4)
    parts = loaded._parts[1]  # base and expert alone, from the proxy's own passes
    torch.testing.assert_close(parts["expert"], loaded.tm.label_scores(texts), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(parts["base"], loaded.base.label_scores(texts), rtol=1e-5, atol=1e-5)
    assert set(record.extra["alpha_sweep"]) == {"0.25", "0.5", "1.0", "2.0"}
    assert record.extra["alpha_sweep"]["1.0"] == record.score  # the run's own alpha


def test_alpha_predictions_equal_a_rerun_at_that_alpha(tiny_llama, small_llama, tasks, tmp_path):
    """Picking labels at another alpha from one run's parts equals running Eq. 1 at it."""
    train_task, eval_task = tasks
    spec = ModelSpec(model=str(tiny_llama))
    texts = eval_task.texts()[:12]
    runs = {}
    for alpha in (1.0, 2.5):
        cfg = ProxyConfig(proxy_small=str(small_llama), proxy_alpha=alpha)
        adapted, _ = get_method("proxy").fit(train_task, None, cfg, RunContext(spec, TRAIN, tmp_path / str(alpha)))
        adapted.scores(texts)
        runs[alpha] = adapted._parts[1]
    want = runs[2.5]["proxy"].argmax(dim=1)
    assert torch.equal(alpha_predictions(runs[1.0], 1.0, 2.5), want)
    assert torch.equal(alpha_predictions(runs[1.0], 1.0, 0.0), runs[1.0]["base"].argmax(dim=1))
    margins = mean_label_margins(runs[1.0], 1.0)
    assert set(margins) == {"base", "expert", "anti_expert"} and margins["expert"] != margins["anti_expert"]


def test_alpha_zero_generation_equals_base_greedy(tiny_llama, small_llama, tmp_path):
    task = load_task(write_jsonl(tmp_path / "g.jsonl", toy_rows(8, seed=5, kind="generation")))
    spec = ModelSpec(model=str(tiny_llama))
    train_cfg = TrainConfig(epochs=1, batch_size=8, eval_each_epoch=False, max_new_tokens=4)
    cfg = ProxyConfig(proxy_small=str(small_llama), proxy_alpha=0.0, proxy_report_parts=False)
    adapted, _ = get_method("proxy").fit(task, None, cfg, RunContext(spec, train_cfg, tmp_path))
    base = get_method("zero-shot").fit(task, None, get_method("zero-shot").config_class(),
                                       RunContext(spec, train_cfg, tmp_path))[0]
    assert adapted.predict(task.texts()) == base.predict(task.texts())


def test_tokenizer_mismatch_is_one_line_error(tiny_llama, tasks, tmp_path):
    other = make_small_llama(tmp_path / "other", tiny_llama, extra_token="zebra")
    cfg = ProxyConfig(proxy_small=str(other))
    with pytest.raises(LmadaptError) as err:
        get_method("proxy").fit(tasks[0], None, cfg, RunContext(ModelSpec(model=str(tiny_llama)), TRAIN, tmp_path))
    message = str(err.value)
    assert "tokenizers differ" in message and "\n" not in message


def test_reference_nll_by_alpha_is_eq1_teacher_forced(tiny_llama, small_llama, tmp_path):
    """Generation figures: the reference answers' mean token NLL under Eq. 1 at each alpha, from
    one batched, left-padded pass per model, equals scoring each row alone by hand."""
    from lmadapt.data.task import Example, Task
    from lmadapt.decoding import ProxySource
    from lmadapt.methods.proxy.method import reference_nll
    from lmadapt.models.task_model import build_task_model

    texts = ["the film was", "a good story and fine acting", "bad"]
    references = ["great fun", "very good indeed and more", "awful"]
    task = Task(name="t", kind="generation", examples=[Example(t, r) for t, r in zip(texts, references, strict=True)])
    tm = build_task_model(ModelSpec(model=str(tiny_llama)), task)
    tm.model.eval()
    expert = LlamaForCausalLM.from_pretrained(small_llama).eval()
    anti = LlamaForCausalLM.from_pretrained(make_small_llama(tmp_path / "anti", tiny_llama, seed=7)).eval()
    source = ProxySource(tm.model, expert, anti, alpha=1.0, vocab_size=len(tm.tokenizer))
    alphas = (0.0, 0.5, 2.0)
    got = reference_nll(source, tm, texts, references, alphas, batch_size=2)
    total, count = torch.zeros(len(alphas), dtype=torch.float64), 0
    with torch.inference_mode():
        for text, reference in zip(texts, references, strict=True):
            prompt = tm.tokenizer(tm.prompt(text))["input_ids"]
            answer = tm.tokenizer(reference, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([prompt + answer])
            logits = [m(input_ids=ids).logits[0].float() for m in (tm.model, expert, anti)]  # (T, V) each
            for i, alpha in enumerate(alphas):
                logp = (logits[0] + alpha * (logits[1] - logits[2])).log_softmax(-1)
                for j, token in enumerate(answer):
                    total[i] -= float(logp[len(prompt) - 1 + j, token])
            count += len(answer)
    assert list(got) == ["0.0", "0.5", "2.0"]
    for i, alpha in enumerate(alphas):
        assert got[str(alpha)] == pytest.approx(float(total[i] / count), abs=1e-4)
    assert len(set(got.values())) == 3  # alpha moves it


def test_reference_nll_from_one_lora_model_equals_two_models(tiny_llama, small_llama):
    """The shared single-model LoRA expert (adapter on / off, one pass of 2B rows) gives the same
    reference NLL as separate expert (LoRA merged) and anti-expert models."""
    from lmadapt.data.task import Example, Task
    from lmadapt.decoding import ProxySource, SharedLoraProxySource
    from lmadapt.methods.proxy.method import reference_nll
    from lmadapt.models.task_model import build_task_model

    texts, references = ["the film was", "a good story and fine acting"], ["great fun", "very good indeed"]
    task = Task(name="t", kind="generation", examples=[Example(t, r) for t, r in zip(texts, references, strict=True)])
    tm = build_task_model(ModelSpec(model=str(tiny_llama)), task)
    tm.model.eval()
    small = LlamaForCausalLM.from_pretrained(small_llama).eval()
    lora = get_peft_model(LlamaForCausalLM.from_pretrained(small_llama),
                          LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    torch.manual_seed(3)
    for name, param in lora.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.3)
    lora.eval()
    vocab = len(tm.tokenizer)
    shared = reference_nll(SharedLoraProxySource(tm.model, lora, 1.0, vocab), tm, texts, references)
    import copy

    merged = copy.deepcopy(lora).merge_and_unload().eval()
    two = reference_nll(ProxySource(tm.model, merged, small, 1.0, vocab), tm, texts, references)
    assert shared == pytest.approx(two, abs=1e-4)
    assert shared["1.0"] != pytest.approx(shared["0.0"], abs=1e-3)  # the adapter moves it
