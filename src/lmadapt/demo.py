"""`lmadapt demo`: every registered method on real models and real data, compared in one table.

Pulls MiniLM (encoder methods) and SmolLM2-135M-Instruct (methods that need a language model) and
the Rotten Tomatoes reviews (fresh vs rotten), all offline-capable through `lmadapt pull`, then
runs `compare` on a fixed, seeded subset sized for a laptop CPU: choices on a validation set held
out of the training reviews, every method paired with the best, and a recommendation on top.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from lmadapt.compare import CompareConfig, compare, method_configs
from lmadapt.data.loaders import DataSpec, load_task
from lmadapt.data.task import split_task
from lmadapt.methods import REGISTRY
from lmadapt.models.load import ModelSpec
from lmadapt.train.config import TrainConfig

console = Console(stderr=True)
ENCODER = "minilm"
CAUSAL = "smollm2-135m"
DATASET = "rotten-tomatoes"
TEMPLATE = "Movie review: {text}\nIs this review fresh (positive) or rotten (negative)? Answer:"


@dataclass(frozen=True)
class DemoSize:
    train: int  # training examples (encoder methods; the demonstration pool for icl)
    eval: int  # eval examples, shared by every method
    epochs: float


SEARCH_TRIALS = 2  # per trainable method: the defaults, then one TPE proposal (cli.demo's default too)
SIZES = {"full": DemoSize(train=400, eval=150, epochs=2.0), "quick": DemoSize(train=160, eval=80, epochs=1.0)}
def model_for(method: str) -> str:
    """MiniLM when the method can use an encoder, else SmolLM2 (prompting needs a language model)."""
    return ENCODER if "encoder" in REGISTRY[method].model_kinds else CAUSAL


def run_demo(out: Path, quick: bool = False, methods: list[str] | None = None,
             settings: CompareConfig | None = None, overwrite: bool = False) -> None:
    from lmadapt.assets import pull_data, pull_model

    size = SIZES["quick" if quick else "full"]
    began = time.perf_counter()
    console.rule("lmadapt demo: pulling models and data (cached after the first run)")
    data_file = pull_data(DATASET)
    # a method declares `demo_note` when the demo's sentiment task or budget does not suit it
    names = methods or [m for m, cls in REGISTRY.items() if not cls.demo_note]
    skipped = [f"- `{m}`: {cls.demo_note}" for m, cls in REGISTRY.items() if cls.demo_note and m not in names]
    plan = [(m, str(pull_model(model_for(m)))) for m in names]
    task = load_task(data_file, DataSpec(template=TEMPLATE), name=DATASET)
    train_task, eval_task = split_task(task, 0.2, seed=0)
    train_task = train_task.subsample(size.train, seed=0)
    eval_task = eval_task.subsample(size.eval, seed=0)
    console.print(f"{DATASET}: {len(train_task.examples)} train / {len(eval_task.examples)} eval examples, "
                  f"labels {train_task.labels}; methods: {', '.join(names)}")
    train_cfg = TrainConfig(epochs=size.epochs, batch_size=8, max_length=128, eval_each_epoch=True,
                            eval_batch_size=32)
    configs = method_configs([(m, None) for m in names], {})
    notes = ["## Not in the demo", "", *skipped, ""] if skipped else []
    compare(plan, ModelSpec(model=plan[0][1]), train_task, eval_task, configs, train_cfg, out,
            title=f"lmadapt demo: {DATASET} ({len(eval_task.examples)} eval reviews)", notes=notes,
            overwrite=overwrite, settings=settings or CompareConfig(search_trials=SEARCH_TRIALS))
    console.print(f"demo finished in {time.perf_counter() - began:.0f} s; report: {out / 'report.md'} "
                  f"(and report.html), plots: {out / 'pareto.png'}, {out / 'learning_curves.png'}")
