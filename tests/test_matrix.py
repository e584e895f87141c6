"""The common method matrix (STYLE.md §7) on tiny random models built from configs.

For every (method, model) case:
- trainable parameters change and frozen ones don't;
- save → load (lmadapt.run.load_run) gives identical outputs;
- the adapted model differs from the base model.
New methods add a row to CASES (and, where merging exists, a merge test in their own file).

Generation (GEN_CASES): every method whose task_kinds include generation, on the tiny llama with
a plain text → output file and on the tiny ChatML llama with a `messages` file. There, save →
load gives identical predictions and target log-likelihoods, and the adapted model differs from
the base: a method that trains gives the targets other log-likelihoods, one that does not
changes the prompt (zero-shot is the base).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from lmadapt.data import DataSpec, load_train_eval
from lmadapt.data.chat import prompt_messages
from lmadapt.decoding import sequence_logprobs
from lmadapt.methods import REGISTRY, get_method
from lmadapt.methods.base import RunContext, task_model_for
from lmadapt.models.load import ModelSpec
from lmadapt.run import load_run, tune
from lmadapt.train.config import TrainConfig
from tiny import toy_chat_rows, toy_rows, write_jsonl

# (method, model fixture, method settings, trains weights?)
CASES = [
    ("zero-shot", "tiny_llama", {}, False),
    ("icl", "tiny_llama", {"shots": 2}, False),
    ("icl", "tiny_llama", {"shots": 2, "selection": "nearest"}, False),
    ("rag", "tiny_llama", {"rag_embedder": "", "rag_k": 2}, False),
    ("features", "tiny_bert", {"cv_folds": 2}, False),
    ("features", "tiny_llama", {"cv_folds": 2}, False),
    ("head", "tiny_bert", {}, True),
    ("head", "tiny_llama", {"unfreeze_last": 1}, True),
    ("full", "tiny_bert", {}, True),
    ("full", "tiny_llama", {}, True),
    ("proxy", "tiny_llama", {"expert_method": "full"}, True),  # proxy_small empty: the model is also M-
]
TRAIN = TrainConfig(epochs=1, batch_size=8, lr=3e-3, eval_each_epoch=False, warmup_ratio=0.0)


def _ids(case: tuple) -> str:
    method, model, settings, _ = case
    extra = "-".join(f"{k}={v}" for k, v in settings.items())
    return f"{method}-{model.removeprefix('tiny_')}" + (f"-{extra}" if extra else "")


@pytest.fixture(scope="module")
def tasks(toy_data):
    return load_train_eval(toy_data[0], toy_data[1], DataSpec())


def _initial_state(adapted, task, spec, tmp_path, model_dir) -> dict[str, torch.Tensor]:
    """Parameters before fitting: the same seeded construction (heads included), or the base file."""
    if hasattr(adapted, "tm"):
        tm = task_model_for(task, RunContext(spec, TRAIN, tmp_path))
        return {n: p.detach().clone() for n, p in tm.model.named_parameters()}
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def _model_of(adapted) -> torch.nn.Module:
    return adapted.tm.model if hasattr(adapted, "tm") else adapted.embedder.model


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_method_matrix(case, tasks, request, tmp_path):
    method, fixture, settings, trains = case
    model_dir = request.getfixturevalue(fixture)
    train_task, eval_task = tasks
    impl = get_method(method)
    cfg = impl.config_class(**settings)
    spec = ModelSpec(model=str(model_dir))
    texts = eval_task.texts()[:8]

    # base-model scores, for "adapted differs from base"
    base_cfg = get_method("zero-shot").config_class()
    if fixture == "tiny_llama":
        base = get_method("zero-shot").fit(train_task, None, base_cfg, RunContext(spec, TRAIN, tmp_path))[0]
        base_scores = base.scores(texts)

    record = tune(method, spec, train_task, eval_task, cfg, TRAIN, tmp_path / "run")
    assert 0.0 <= record.ci_low <= record.score <= record.ci_high <= 1.0
    assert record.trainable_params <= record.total_params
    assert (tmp_path / "run" / "record.json").exists() and not (tmp_path / ".run.partial").exists()

    # save → load gives identical outputs
    loaded, _, _ = load_run(tmp_path / "run")
    fresh, _ = impl.fit(train_task, eval_task, cfg, RunContext(spec, TRAIN, tmp_path / "again"))
    torch.testing.assert_close(loaded.scores(texts), fresh.scores(texts), rtol=1e-4, atol=1e-4)

    # trainable parameters change, frozen ones don't
    before = _initial_state(fresh, train_task, spec, tmp_path, model_dir)
    trainable = {n for n, p in _model_of(fresh).named_parameters() if p.requires_grad}
    changed, frozen_changed = [], []
    for name, tensor in _model_of(fresh).named_parameters():
        key = next((k for k in before if k == name or name.endswith("." + k) or k.endswith("." + name)), None)
        assert key is not None, f"parameter {name} has no initial value"
        if not torch.equal(before[key], tensor.detach()):
            (changed if name in trainable else frozen_changed).append(name)
    assert not frozen_changed, f"frozen parameters changed: {frozen_changed[:3]}"
    if trains:
        assert record.trainable_params > 0 and changed, "no trainable parameter changed"
        assert record.train_steps == 8 and record.final_loss is not None
    else:
        assert not changed

    # adapted differs from the base model
    if fixture == "tiny_llama" and method != "zero-shot" and method != "features":
        assert not torch.allclose(loaded.scores(texts), base_scores, atol=1e-5)


@pytest.mark.parametrize("head_lr", [1e-2, 0.0])
def test_full_gives_the_encoder_head_its_own_lr(head_lr, tasks, tiny_bert, tmp_path):
    """At a near-zero body lr, only the head (classifier + pooler) moves, and only when
    full_head_lr is set."""
    from lmadapt.methods.full import FullConfig

    cfg = TrainConfig(epochs=1, batch_size=8, lr=1e-9, warmup_ratio=0.0, eval_each_epoch=False,
                      max_grad_norm=0.0, max_train_examples=32)
    ctx = RunContext(ModelSpec(model=str(tiny_bert)), cfg, tmp_path)
    before = {n: p.detach().clone() for n, p in task_model_for(tasks[0], ctx).model.named_parameters()}
    adapted, _ = get_method("full").fit(tasks[0], None, FullConfig(full_head_lr=head_lr), ctx)
    moved = {n for n, p in adapted.tm.model.named_parameters() if (p - before[n]).abs().max() > 1e-6}
    head = {n for n in before if n.startswith(("classifier", "bert.pooler"))}
    assert moved == (head if head_lr else set())


# ---- generation -------------------------------------------------------------------------------

GEN_SETTINGS = {"icl": [{"shots": 2}, {"shots": 2, "selection": "nearest"}],
                "rag": [{"rag_embedder": "", "rag_k": 2}], "head": [{"unfreeze_last": 1}]}
GEN_CASES = [(name, fixture, settings, cls.trains)
             for name, cls in REGISTRY.items() if "generation" in cls.task_kinds
             for fixture in ("tiny_llama", "tiny_chat_llama")
             for settings in GEN_SETTINGS.get(name, [{}])]
GEN_TRAIN = replace(TRAIN, max_new_tokens=4)


@pytest.fixture(scope="module")
def gen_tasks(tmp_path_factory):
    """{fixture: (train, eval)}: text → output rows for the plain llama, messages for the chat one."""
    folder = tmp_path_factory.mktemp("gen")
    plain = [write_jsonl(folder / f"{split}.jsonl", toy_rows(n, seed=seed, kind="generation"))
             for split, n, seed in (("train", 64, 1), ("eval", 8, 2))]
    chat = [write_jsonl(folder / f"chat_{split}.jsonl", toy_chat_rows(n, seed=seed))
            for split, n, seed in (("train", 64, 1), ("eval", 8, 2))]
    return {"tiny_llama": load_train_eval(*plain, DataSpec()), "tiny_chat_llama": load_train_eval(*chat, DataSpec())}


def _prompts_and_scorer(adapted, texts: list[str]) -> tuple[list[str], object, object]:
    """The prompts the adapted model reads, what scores continuations (a model or a logit
    source: the proxy's steered distribution), and its tokenizer."""
    if hasattr(adapted, "source"):  # proxy: base + alpha * (expert - anti-expert)
        return [adapted.base.prompt(t) for t in texts], adapted.source, adapted.base.tokenizer
    tm = adapted.tm
    return [tm.prompt(t) for t in texts], tm.model, tm.tokenizer


@torch.inference_mode()
def _target_logprobs(adapted, texts: list[str], targets: list[str]) -> torch.Tensor:
    """(N,) log-likelihood of each target after the adapted model's prompt."""
    prompts, scorer, tokenizer = _prompts_and_scorer(adapted, texts)
    return sequence_logprobs(scorer, tokenizer, prompts, targets)[0]


@pytest.mark.parametrize("case", GEN_CASES, ids=[_ids(c) for c in GEN_CASES])
def test_method_matrix_generation(case, gen_tasks, request, tmp_path, monkeypatch):
    method, fixture, settings, trains = case
    model_dir = request.getfixturevalue(fixture)
    train_task, eval_task = gen_tasks[fixture]
    assert train_task.kind == "generation" and train_task.chat == (fixture == "tiny_chat_llama")
    impl = get_method(method)
    cfg = impl.config_class(**settings)
    spec = ModelSpec(model=str(model_dir))
    texts, targets = eval_task.texts(), eval_task.targets()

    base = get_method("zero-shot").fit(train_task, None, get_method("zero-shot").config_class(),
                                       RunContext(spec, GEN_TRAIN, tmp_path / "base"))[0]
    base_prompts = _prompts_and_scorer(base, texts)[0]
    base_logprobs = _target_logprobs(base, texts, targets)

    record = tune(method, spec, train_task, eval_task, cfg, GEN_TRAIN, tmp_path / "run")
    assert record.metric == "exact_match" and 0.0 <= record.ci_low <= record.score <= record.ci_high <= 1.0
    assert record.trainable_params <= record.total_params

    # parameters as training starts (adapter modules included), from the shared loop's entry
    import lmadapt.methods.base as base_module

    started: dict[str, torch.Tensor] = {}
    real_train = base_module.train

    def recording_train(tm, *args, **kwargs):
        started.update({n: p.detach().clone() for n, p in tm.model.named_parameters()})
        return real_train(tm, *args, **kwargs)

    monkeypatch.setattr(base_module, "train", recording_train)
    fresh, _ = impl.fit(train_task, eval_task, cfg, RunContext(spec, GEN_TRAIN, tmp_path / "again"))
    monkeypatch.undo()

    # save → load gives identical predictions and target log-likelihoods
    loaded, _, _ = load_run(tmp_path / "run")
    predictions = loaded.predict(texts)
    assert predictions == fresh.predict(texts)
    assert loaded.evaluate(eval_task)[1]["score"] == pytest.approx(record.score)
    adapted_logprobs = _target_logprobs(loaded, texts, targets)
    torch.testing.assert_close(adapted_logprobs, _target_logprobs(fresh, texts, targets), rtol=1e-4, atol=1e-4)

    # trainable parameters change, frozen ones don't
    model = _model_of(fresh)
    if trains:
        assert started, "training never reached the shared loop"
        before = started
    else:
        before = {n: p.detach().clone() for n, p in
                  task_model_for(train_task, RunContext(spec, GEN_TRAIN, tmp_path)).model.named_parameters()}
    changed, frozen_changed = [], []
    for name, tensor in model.named_parameters():
        assert name in before, f"parameter {name} has no initial value"
        if not torch.equal(before[name], tensor.detach()):
            (changed if tensor.requires_grad else frozen_changed).append(name)
    assert not frozen_changed, f"frozen parameters changed: {frozen_changed[:3]}"
    if trains:
        assert record.trainable_params > 0 and changed, "no trainable parameter changed"
        assert record.train_steps == 8 and record.final_loss is not None
    else:
        assert not changed and record.trainable_params == 0

    # adapted differs from the base model
    if trains:
        assert not torch.allclose(adapted_logprobs, base_logprobs, atol=1e-5)
    elif method != "zero-shot":
        prompts = _prompts_and_scorer(loaded, texts)[0]
        for text, prompt, base_prompt in zip(texts, prompts, base_prompts, strict=True):
            query = base_prompt[base_prompt.rindex(prompt_messages(text)[-1]["content"]):]  # last turn on
            assert prompt != base_prompt and prompt.endswith(query)
        assert not torch.allclose(adapted_logprobs, base_logprobs, atol=1e-5)

