"""Real models on real data (opt in: `pytest -m integration`; pulls MiniLM, SmolLM2 and Rotten
Tomatoes through `lmadapt pull` on first use). Thresholds sit well below the measured scores
(docs/demo.md) and well above chance (0.58 = always predicting the majority label 'fresh')."""

from __future__ import annotations

import pytest

from lmadapt.assets import pull_data, pull_model
from lmadapt.data import DataSpec, load_task, split_task
from lmadapt.methods import get_method
from lmadapt.models.load import ModelSpec
from lmadapt.run import load_run, tune
from lmadapt.train.config import TrainConfig

pytestmark = pytest.mark.integration
TEMPLATE = "Movie review: {text}\nIs this review fresh (positive) or rotten (negative)? Answer:"


@pytest.fixture(scope="module")
def reviews():
    task = load_task(pull_data("rotten-tomatoes"), DataSpec(template=TEMPLATE))
    train, evals = split_task(task, 0.2, seed=0)
    return train.subsample(400, seed=0), evals.subsample(150, seed=0)


@pytest.mark.parametrize("method, model, threshold", [
    ("features", "minilm", 0.65),
    ("adapter", "minilm", 0.60),
    ("full", "minilm", 0.62),
    ("zero-shot", "smollm2-135m", 0.55),
])
def test_real_method_beats_chance_and_reloads(method, model, threshold, reviews, tmp_path):
    train, evals = reviews
    impl = get_method(method)
    cfg = TrainConfig(epochs=2, batch_size=16, max_length=96, eval_each_epoch=False)
    record = tune(method, ModelSpec(model=str(pull_model(model))), train, evals, impl.config_class(), cfg,
                  tmp_path / "run")
    assert record.score >= threshold, record
    adapted, _, _ = load_run(tmp_path / "run")
    assert adapted.predict(evals.texts()[:20]) == [p["prediction"] for p in _predictions(tmp_path / "run")[:20]]


def _predictions(run_dir):
    import json

    return [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
