"""The common method matrix (STYLE.md §7) on tiny random models built from configs.

For every (method, model) case:
- trainable parameters change and frozen ones don't;
- save → load (lmadapt.run.load_run) gives identical outputs;
- the adapted model differs from the base model.
New methods add a row to CASES (and, where merging exists, a merge test in their own file).
"""

from __future__ import annotations

import pytest
import torch

from lmadapt.data import DataSpec, load_train_eval
from lmadapt.methods import get_method
from lmadapt.methods.base import RunContext, task_model_for
from lmadapt.models.load import ModelSpec
from lmadapt.run import load_run, tune
from lmadapt.train.config import TrainConfig

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
