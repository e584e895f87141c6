"""Work a compare's runs share (issue 14): a frozen body runs once per example, and once per process
for every run on the same model and texts; the cached path trains what the uncached one does."""

import os
from collections import Counter

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer
from transformers.models.bert.modeling_bert import BertModel

from lmadapt.compare import CompareConfig, compare, method_configs
from lmadapt.data import DataSpec, load_train_eval
from lmadapt.data.loaders import load_task
from lmadapt.methods import get_method
from lmadapt.methods.base import RunContext, task_model_for
from lmadapt.methods.head import HeadConfig
from lmadapt.methods.head.cached import (
    FIRST_TOKEN,
    FirstTokenBody,
    cached_kind,
    reproduces,
    stub_for,
)
from lmadapt.models.embed import FrozenEmbedder
from lmadapt.models.feature_cache import FEATURES, FeatureCache
from lmadapt.models.load import ModelSpec
from lmadapt.train.config import TrainConfig
from lmadapt.train.loop import epoch_scores
from tiny import make_bert, toy_chat_rows, write_jsonl


@pytest.fixture(autouse=True)
def empty_cache():
    FEATURES.clear()
    yield
    FEATURES.clear()


@pytest.fixture(scope="module")
def still_bert(tmp_path_factory):
    """The tiny BERT without dropout: there the cached and uncached paths compute the same thing."""
    return make_bert(tmp_path_factory.mktemp("still_bert"), dropout=0.0)


@pytest.fixture
def tasks(toy_data):
    return load_task(toy_data[0], DataSpec()), load_task(toy_data[1], DataSpec(), name="eval")


def _fit_head(model, tasks, cache, work, **method):
    train_task, eval_task = tasks
    val_task = eval_task.with_examples(eval_task.examples[:12])
    cfg = TrainConfig(epochs=2, batch_size=8, lr=1e-2, warmup_ratio=0.0, eval_batch_size=16, max_new_tokens=4)
    ctx = RunContext(ModelSpec(model=str(model)), cfg, work)
    with epoch_scores(lambda epoch, score: None):  # every epoch scored on val_task, as in a compare
        return get_method("head").fit(train_task, val_task, HeadConfig(cache_frozen=cache, **method), ctx)


@pytest.fixture
def chat_tasks(tmp_path):
    train = write_jsonl(tmp_path / "chat_train.jsonl", toy_chat_rows(32, seed=1))
    return load_train_eval(train, write_jsonl(tmp_path / "chat_eval.jsonl", toy_chat_rows(12, seed=2)), DataSpec())


@pytest.mark.parametrize(("model", "data"), [("still_bert", "tasks"), ("tiny_llama", "tasks"),
                                             ("tiny_chat_llama", "chat_tasks")])
def test_cached_head_trains_what_the_uncached_one_does(model, data, tmp_path, request):
    """Same per-step losses, per-epoch validation scores, trained tensors and predictions. On the
    tiny llamas (output layer untied) the cached states are those at the LM loss's positions: the
    label tokens of a classification task, the assistant tokens of a chat generation task."""
    path, tasks = request.getfixturevalue(model), request.getfixturevalue(data)
    (plain, plain_result), (cached, cached_result) = (
        _fit_head(path, tasks, cache, tmp_path / str(cache)) for cache in (False, True))
    assert cached_kind(cached.tm) is not None and FEATURES.misses >= 1  # the cached path ran
    assert cached_result.losses == pytest.approx(plain_result.losses, rel=1e-5, abs=1e-6)
    assert [e["score"] for e in cached_result.epoch_evals] == [e["score"] for e in plain_result.epoch_evals]
    weights = dict(plain.tm.model.named_parameters())
    trained = {n: p for n, p in cached.tm.model.named_parameters() if p.requires_grad}
    assert trained and set(trained) == {n for n, p in weights.items() if p.requires_grad}
    for name, tensor in trained.items():
        torch.testing.assert_close(tensor, weights[name], rtol=1e-4, atol=1e-5)
    texts = tasks[1].texts()
    assert cached.predict(texts) == plain.predict(texts)
    if tasks[1].kind == "classification":
        torch.testing.assert_close(cached.scores(texts), plain.scores(texts), rtol=1e-4, atol=1e-4)
    assert cached_result.tokens == plain_result.tokens


def test_a_head_off_its_frozen_body_is_not_cached(still_bert, tiny_llama, tasks):
    ctx = RunContext(ModelSpec(model=str(still_bert)), TrainConfig(), None)
    bert = task_model_for(tasks[0], ctx)
    assert reproduces(bert, stub_for(bert.model, FIRST_TOKEN), FIRST_TOKEN)
    assert not reproduces(bert, FirstTokenBody(None), FIRST_TOKEN)  # the check can fail
    llama = task_model_for(tasks[0], RunContext(ModelSpec(model=str(tiny_llama)), TrainConfig(), None))
    assert cached_kind(llama) is not None
    llama.model.lm_head.weight = llama.model.get_input_embeddings().weight  # tied: the body would train
    assert cached_kind(llama) is None


@pytest.fixture
def encoded(monkeypatch, tiny_bert):
    """How often each text went through a BERT body (any model, any method)."""
    tokenizer, seen, original = AutoTokenizer.from_pretrained(str(tiny_bert)), Counter(), BertModel.forward

    def spy(self, input_ids=None, attention_mask=None, *args, **kwargs):
        if input_ids is not None:
            for row, mask in zip(input_ids, attention_mask, strict=True):
                seen[tokenizer.decode(row[mask.bool()], skip_special_tokens=True)] += 1
        return original(self, input_ids, attention_mask, *args, **kwargs)

    monkeypatch.setattr(BertModel, "forward", spy)
    return seen


def test_a_compare_encodes_each_training_text_once(tiny_bert, tasks, tmp_path, encoded):
    """features and head, 2 seeds, 2 epochs: each training text (training part and validation set)
    goes through the encoder once in all; each eval text once per final model (2 methods x 2 seeds)."""
    train_task, eval_task = tasks
    cfg = TrainConfig(epochs=2, batch_size=8)
    methods = [("features", None), ("head", None)]
    compare(methods, ModelSpec(model=str(tiny_bert)), train_task, eval_task,
            method_configs(methods, {"cv_folds": 2}), cfg, tmp_path / "c", settings=CompareConfig(seeds=2))
    data = Counter(train_task.texts()) + Counter({t: 4 * n for t, n in Counter(eval_task.texts()).items()})
    assert {t: n for t, n in encoded.items() if t in data} == data
    assert FEATURES.hits >= 3  # features seed 2; head seeds 1 and 2 on the training part


def test_the_cache_serves_only_the_same_model_texts_and_length(tiny_bert, tmp_path):
    texts = ["the movie was good", "a dull plot", "the acting is superb"]

    def shared(model, texts=texts, max_length=32, pooling="mean", **spec):
        return FrozenEmbedder(ModelSpec(model=str(model), **spec), pooling, max_length).encode_shared(texts)

    first = shared(tiny_bert)
    fresh = FrozenEmbedder(ModelSpec(model=str(tiny_bert)), "mean", 32).encode(texts)
    np.testing.assert_allclose(first.arrays["vectors"], fresh, rtol=1e-5, atol=1e-6)
    assert shared(tiny_bert).arrays["vectors"] is first.arrays["vectors"] and FEATURES.hits == 1
    assert shared(tiny_bert, pooling="cls").arrays["vectors"].shape == fresh.shape  # one entry, every pooling
    assert FEATURES.hits == 2 and FEATURES.misses == 1
    other = make_bert(tmp_path / "other", seed=1)
    assert not np.allclose(shared(other).arrays["vectors"], fresh)
    for changed in (shared(tiny_bert, texts=texts[:2]), shared(tiny_bert, max_length=16),
                    shared(tiny_bert, dtype="bfloat16")):
        assert changed.arrays["vectors"] is not first.arrays["vectors"]
    weights = other / "model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the model re-saved in place
    shared(other)
    assert FEATURES.hits == 2 and FEATURES.misses == 6
    with pytest.raises(ValueError):
        first.arrays["vectors"][0, 0] = 1.0  # read-only: no run can change another's


def test_the_cache_is_bounded_least_recently_used_first():
    cache = FeatureCache(max_bytes=3 * 400)
    block = lambda: {"x": np.zeros(100, np.float32)}  # noqa: E731  400 bytes
    for key in ("a", "b", "c"):
        cache.get_or_compute((key,), block)
    cache.get_or_compute(("a",), block)  # a is now the most recently used
    cache.get_or_compute(("d",), block)
    assert list(cache.entries) == [("c",), ("a",), ("d",)] and cache.hits == 1
    cache.get_or_compute(("big",), lambda: {"x": np.zeros(1000, np.float32)})  # over the bound: not kept
    assert ("big",) not in cache.entries and cache.nbytes == 1200


def test_cached_head_trains_with_gradient_checkpointing_set(still_bert, tasks, tmp_path):
    """gradient_checkpointing=true has nothing to recompute on a cached body (not in the graph): the
    cached head trains as without it, instead of failing on a stub that has no layers."""
    cfg = TrainConfig(epochs=1, batch_size=8, gradient_checkpointing=True)
    ctx = RunContext(ModelSpec(model=str(still_bert)), cfg, tmp_path)
    _, result = get_method("head").fit(tasks[0], None, HeadConfig(), ctx)
    assert result.steps == 8 and FEATURES.misses == 1
