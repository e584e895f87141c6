"""DSS vs the label-only baseline at several training-data fractions (Hsieh et al., 2023, §4.1,
Fig. 4-5): both variants train on the same seeded subset at each fraction and are scored on the
same eval set. Writes fractions.json, fractions.md and fractions.png (score vs data fraction).
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from lmadapt.data.task import Task
from lmadapt.errors import LmadaptError
from lmadapt.eval.significance import paired_bootstrap
from lmadapt.methods.base import RunContext
from lmadapt.methods.distill.config import DistillConfig
from lmadapt.methods.distill.method import Distill, score_answers
from lmadapt.models.load import ModelSpec
from lmadapt.outdir import check_out, claim, input_paths
from lmadapt.train.config import TrainConfig
from lmadapt.utils import atomic_write_text, seed_everything

FRACTION_MARKERS = ("fractions.md", "rows-dss.json", "rows-label-only.json")


def parse_fractions(text: str) -> list[float]:
    """'0.125,0.25,0.5,1.0' → [0.125, 0.25, 0.5, 1.0] (each in (0, 1])."""
    try:
        values = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise LmadaptError(f"--fractions must be comma-separated numbers, got {text!r}") from None
    if not values or any(not 0 < v <= 1 for v in values):
        raise LmadaptError(f"--fractions must be in (0, 1], got {text!r}")
    return sorted(set(values))


def nested_subsets(task: Task, fractions: list[float], seed: int) -> dict[float, Task]:
    """One seeded order of the examples; fraction f takes its first round(f·N) (subsets nest)."""
    order = list(range(len(task.examples)))
    random.Random(seed).shuffle(order)
    out = {}
    for fraction in fractions:
        n = max(1, round(fraction * len(order)))
        out[fraction] = task.with_examples([task.examples[i] for i in sorted(order[:n])], suffix=f"@{fraction:g}")
    return out


def run_one(task: Task, eval_task: Task, cfg: DistillConfig, model: ModelSpec, train_cfg: TrainConfig,
            out: Path) -> dict[str, Any]:
    """Fit one student and score it; predictions go to out/predictions.jsonl."""
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(train_cfg.seed)
    with tempfile.TemporaryDirectory(dir=out) as work:
        began = time.perf_counter()
        adapted, result = Distill().fit(task, None, cfg, RunContext(model, train_cfg, Path(work)))
        train_seconds = time.perf_counter() - began
    began = time.perf_counter()
    predictions = adapted.predict(eval_task.texts(), train_cfg.eval_batch_size)
    eval_seconds = time.perf_counter() - began
    atomic_write_text(out / "predictions.jsonl", "".join(
        json.dumps({"text": ex.text, "target": ex.target, "prediction": p}) + "\n"
        for ex, p in zip(eval_task.examples, predictions, strict=True)))
    scores = score_answers(predictions, eval_task.examples, train_cfg.seed)
    return {**scores, "train_examples": len(task.examples), "train_steps": result.steps,
            "final_loss": result.losses[-1] if result.losses else None, "train_seconds": train_seconds,
            "eval_seconds": eval_seconds, "trainable_params": adapted.trainable_params}


VARIANTS = ("dss", "label-only")


def parse_variants(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [n for n in names if n not in VARIANTS]
    if bad or not names:
        raise LmadaptError(f"--variants must be a subset of {','.join(VARIANTS)}, got {text!r}")
    return names


def read_rows(out: Path) -> list[dict[str, Any]]:
    """Finished cells of every variant (each variant keeps its own rows-VARIANT.json)."""
    rows = []
    for variant in VARIANTS:
        path = out / f"rows-{variant}.json"
        if path.exists():
            rows += json.loads(path.read_text())
    return rows


def run_fractions(train_task: Task, eval_task: Task, cfg: DistillConfig, model: ModelSpec,
                  train_cfg: TrainConfig, fractions: list[float], out: Path,
                  variants: list[str] | None = None) -> list[dict[str, Any]]:
    """DSS (cfg as given) and label-only (alpha = 1) at each fraction; writes the table and plot.

    Finished cells are kept on disk, so a rerun resumes; each variant may run in its own process
    on the same `out` (pass variants=["dss"] and ["label-only"]).
    """
    # a fractions folder is resumable in place: it may be new, empty, or one written here before
    out = check_out(out, inputs=input_paths(model.model, cfg, train_task, eval_task), markers=FRACTION_MARKERS)
    out.mkdir(parents=True, exist_ok=True)
    # claimed before any cell starts: a second variant's process sees the folder as lmadapt's
    claim(out, [*FRACTION_MARKERS, "fractions.json", "fractions.png",  # markers: fractions.md, rows-VARIANT.json
                *(f"{v}-{f:g}" for v in VARIANTS for f in fractions)])
    configs = {"dss": cfg, "label-only": replace(cfg, distill_alpha=1.0)}
    train_task = train_task.subsample(train_cfg.max_train_examples or None, train_cfg.seed)
    eval_task = eval_task.subsample(train_cfg.max_eval_examples or None, train_cfg.seed)
    for variant in variants or list(VARIANTS):
        rows_path = out / f"rows-{variant}.json"
        rows = json.loads(rows_path.read_text()) if rows_path.exists() else []
        for fraction, subset in nested_subsets(train_task, fractions, train_cfg.seed).items():
            if any(r["fraction"] == fraction for r in rows):
                continue
            print(f"[distill] fraction {fraction:g} ({len(subset.examples)} examples), {variant}", flush=True)
            run_cfg = replace(train_cfg, batch_size=min(train_cfg.batch_size, len(subset.examples)))
            row = run_one(subset, eval_task, configs[variant], model, run_cfg, out / f"{variant}-{fraction:g}")
            rows.append({"fraction": fraction, "variant": variant, **row})
            print(f"[distill]   {row['metric']} = {row['score']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]",
                  flush=True)
            atomic_write_text(rows_path, json.dumps(rows, indent=2))
            write_outputs(read_rows(out), out, model, cfg, train_cfg, train_task, eval_task)
    return read_rows(out)


def write_outputs(rows: list[dict[str, Any]], out: Path, model: ModelSpec, cfg: DistillConfig,
                  train_cfg: TrainConfig, train_task: Task, eval_task: Task) -> None:
    """fractions.json (rows + settings), fractions.md (table) and fractions.png (plot)."""
    meta = {"model": model.model, "train": train_task.name, "train_pool": len(train_task.examples),
            "eval": eval_task.name, "eval_examples": len(eval_task.examples), "distill": asdict(cfg),
            "train_config": asdict(train_cfg)}
    atomic_write_text(out / "fractions.json", json.dumps({"meta": meta, "rows": rows}, indent=2, default=str))
    atomic_write_text(out / "fractions.md", markdown_table(rows))
    plot(rows, out / "fractions.png")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """One line per fraction: both variants' scores with 95% CIs, the difference, and a paired
    bootstrap of it on the same eval examples (95% CI, two-sided p)."""
    metric = rows[0]["metric"] if rows else "score"
    lines = [f"| fraction | train examples | label-only {metric} | DSS {metric} | DSS − label-only "
             "| paired 95% CI | p |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for fraction in sorted({r["fraction"] for r in rows}):
        cells = {r["variant"]: r for r in rows if r["fraction"] == fraction}
        base, dss = cells.get("label-only"), cells.get("dss")
        def fmt(r: dict | None) -> str:
            return f"{r['score']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]" if r else "—"
        diff = f"{dss['score'] - base['score']:+.3f}" if base and dss else "—"
        n = (base or dss)["train_examples"]
        ci, p = paired_cells(base, dss)
        lines.append(f"| {fraction:g} | {n} | {fmt(base)} | {fmt(dss)} | {diff} | {ci} | {p} |")
    return "\n".join(lines) + "\n"


def paired_cells(base: dict | None, dss: dict | None) -> tuple[str, str]:
    """DSS − label-only on the same eval examples: the paired bootstrap's 95% CI and p ("—" when
    either cell lacks per-example scores, e.g. rows written by an older version)."""
    a, b = ((r or {}).get("per_example") for r in (dss, base))
    if not a or not b or len(a) != len(b):
        return "—", "—"
    pair = paired_bootstrap(np.asarray(a, dtype=float), np.asarray(b, dtype=float), seed=0)
    return f"[{pair.ci_low:+.3f}, {pair.ci_high:+.3f}]", f"{pair.p:.3f}"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Score vs training-data fraction, one line per variant, CI as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for variant in ("label-only", "dss"):
        points = sorted((r["fraction"], r["score"], r["ci_low"], r["ci_high"]) for r in rows if r["variant"] == variant)
        if not points:
            continue
        xs, ys, lows, highs = zip(*points, strict=True)
        errors = [[y - lo for y, lo in zip(ys, lows, strict=True)], [hi - y for y, hi in zip(ys, highs, strict=True)]]
        ax.errorbar(xs, ys, yerr=errors, marker="o", capsize=3, label=variant)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("fraction of training data")
    ax.set_ylabel(rows[0]["metric"] if rows else "score")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
