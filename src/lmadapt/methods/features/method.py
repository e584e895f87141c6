"""features: frozen embeddings → standardise → multinomial logistic regression (C by CV).

The fitted classifier is stored as plain arrays (safetensors), never as a pickle; prediction is
softmax(((x - mean) / scale) · Wᵀ + b), computed here without scikit-learn.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from lmadapt.data.task import Task
from lmadapt.methods.base import Adapted, RunContext
from lmadapt.methods.features.config import FeaturesConfig
from lmadapt.models.embed import FrozenEmbedder
from lmadapt.train.loop import TrainResult


@dataclass
class LinearProbe(Adapted):
    """A frozen embedder with a linear classifier on top."""

    embedder: FrozenEmbedder
    labels: list[str]
    weights: dict[str, np.ndarray]  # coef (K, C), intercept (K,), mean (C,), scale (C,)
    batch_size: int = 32

    @property
    def trainable_params(self) -> int:
        return int(self.weights["coef"].size + self.weights["intercept"].size)

    @property
    def total_params(self) -> int:
        return self.embedder.total_params + self.trainable_params

    def logits(self, texts: list[str]) -> np.ndarray:
        x = self.embedder.encode(texts, self.batch_size)  # (N, C)
        z = (x - self.weights["mean"]) / self.weights["scale"]
        return z @ self.weights["coef"].T + self.weights["intercept"]  # (N, K) or (N, 1) binary

    def scores(self, texts: list[str]) -> torch.Tensor:
        return torch.from_numpy(self.logits(texts))

    def predict(self, texts: list[str], batch_size: int = 32) -> list[str]:
        scores = self.logits(texts)
        if scores.shape[1] == 1:  # sklearn's binary form: positive class = labels[1]
            picks = (scores[:, 0] > 0).astype(int)
        else:
            picks = scores.argmax(axis=1)
        return [self.labels[i] for i in picks]

    def save(self, artifact_dir: Path) -> None:
        artifact_dir.mkdir(parents=True, exist_ok=True)
        save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in self.weights.items()},
                  str(artifact_dir / "probe.safetensors"))


def fit_probe(x: np.ndarray, y: np.ndarray, cfg: FeaturesConfig, seed: int) -> dict[str, np.ndarray]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    z = (x - mean) / scale
    folds = min(cfg.cv_folds, int(np.bincount(y).min()))
    base = LogisticRegression(max_iter=cfg.max_iter)
    if folds >= 2:
        search = GridSearchCV(base, {"C": cfg.cs}, cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
        clf = search.fit(z, y).best_estimator_
    else:  # a class with one example: no CV possible, use the middle of the grid
        clf = LogisticRegression(C=sorted(cfg.cs)[len(cfg.cs) // 2], max_iter=cfg.max_iter).fit(z, y)
    return {"coef": clf.coef_, "intercept": clf.intercept_, "mean": mean, "scale": scale}


class Features:
    name = "features"
    config_class = FeaturesConfig
    summary = "frozen embeddings + logistic regression"
    model_kinds = ("encoder", "causal")
    task_kinds = ("classification",)
    trains = False  # the probe is fit in closed form (sklearn); no weight of the model changes

    def fit(self, train: Task, eval_task: Task | None, cfg: FeaturesConfig,
            ctx: RunContext) -> tuple[LinearProbe, TrainResult]:
        train.check_trainable()
        embedder = FrozenEmbedder(ctx.model, cfg.pooling, ctx.train.max_length)
        # training cost = embedding the train set + fitting the probe; the embeddings are shared
        # with the other runs of this process on the same model and texts (models/feature_cache.py),
        # and a run that finds them there is charged what computing them took
        embedded = embedder.encode_shared(train.texts(), ctx.train.eval_batch_size, progress=True)
        began = time.perf_counter()
        y = np.array(train.label_ids())
        weights = fit_probe(embedded.arrays["vectors"], y, cfg, ctx.train.seed)
        result = TrainResult(seconds=embedded.seconds + time.perf_counter() - began, examples=len(y))
        return LinearProbe(embedder, list(train.labels), weights, ctx.train.eval_batch_size), result

    def load(self, artifact_dir: Path, task: Task, cfg: FeaturesConfig, ctx: RunContext) -> LinearProbe:
        embedder = FrozenEmbedder(ctx.model, cfg.pooling, ctx.train.max_length)
        weights = load_file(str(artifact_dir / "probe.safetensors"))
        return LinearProbe(embedder, list(task.labels), weights, ctx.train.eval_batch_size)
