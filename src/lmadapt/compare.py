"""`compare`: run several methods on the same data, fairly, and say which to pick.

Fair means every method gets the same training examples, the same validation set for every
choice (learning rate search, epochs, early stopping) and the same eval examples, scored once per
final model. Each selected configuration is retrained with `seeds` seeds; every method is then
paired with the best on the same eval examples (bootstrap, Holm-corrected) and the report opens
with a recommendation that says how sure it is.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from lmadapt.compare_settings import COMPARE_KEYS, CompareConfig
from lmadapt.compare_settings import compare_config as compare_config  # the API it always had
from lmadapt.config import build_configs
from lmadapt.data.task import Task, validation_split
from lmadapt.errors import LmadaptError, ResumeRefused
from lmadapt.eval.significance import compare_to_best, examples_to_separate, seeds_and_examples_ci
from lmadapt.methods import REGISTRY, get_method
from lmadapt.methods.base import capability_gap
from lmadapt.models.load import ModelSpec
from lmadapt.outdir import input_paths
from lmadapt.report.compare import (
    learning_curves,
    markdown_report,
    pareto_plot,
    print_table,
)
from lmadapt.report.html import html_report
from lmadapt.report.recommend import Budgets, rank_key, recommend
from lmadapt.report.record import RunRecord, RunStore
from lmadapt.run import run_settings, tune
from lmadapt.search import (
    apply_params,
    check_space_keys,
    load_space,
    method_space,
    remove_empty,
    search,
)
from lmadapt.train.config import TrainConfig
from lmadapt.train.trackers import check_installed, parse_report_to
from lmadapt.utils import atomic_dir, atomic_write_text

console = Console(stderr=True)


def parse_method_list(text: str) -> list[tuple[str, str | None]]:
    """'features,zero-shot@smollm2-135m' → [('features', None), ('zero-shot', 'smollm2-135m')]."""
    out = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        name, _, model = item.partition("@")
        if name == "all":
            out += [(m, model or None) for m in REGISTRY]
            continue
        get_method(name)  # unknown names fail here, before any work
        out.append((name, model or None))
    if not out:
        raise LmadaptError("no methods given; pass e.g. --methods features,head,full")
    return out


def run_labels(methods: list[tuple[str, str | None]], model_ref: str) -> list[str]:
    """Each entry's label (and run folder name): the method's name on the compare's own model,
    `name@model` on another."""
    return [f"{name}@{Path(ref).name}" if ref and ref != model_ref else name for name, ref in methods]


def method_configs(methods: list[tuple[str, str | None]], values: dict[str, Any]) -> dict[str, Any]:
    """Each method's config from the shared settings; a key must belong to some config."""
    classes = [get_method(m).config_class for m, _ in methods]
    owners = {f.name for cls in classes + [TrainConfig, ModelSpec, CompareConfig] for f in dataclasses.fields(cls)}
    unknown = [k for k in values if k not in owners]
    if unknown:
        raise LmadaptError(f"unknown setting {unknown[0]!r} for methods {', '.join(m for m, _ in methods)}")
    built = build_configs(classes, {k: v for k, v in values.items() if k not in COMPARE_KEYS}, strict=False)
    return {m: built[get_method(m).config_class] for m, _ in methods}


@dataclass
class Entry:
    """One method of a compare: its label, the record that sums up its seeds, its run folders and
    its per-example eval scores (seeds x examples; None when the method scores without them)."""

    label: str
    record: RunRecord
    run_dirs: list[Path]
    per_example: np.ndarray | None


def compare(methods: list[tuple[str, str | None]], model: ModelSpec, train_task: Task, eval_task: Task,
            configs: dict[str, Any], train_cfg: TrainConfig, out: Path,
            title: str = "lmadapt compare", notes: list[str] | None = None,
            overwrite: bool = False, settings: CompareConfig | None = None) -> list[RunRecord]:
    """Run each method into out/runs/<label>; write results.jsonl, report.md, report.html and plots.

    Selection never reads the eval set: a validation set (`val_split`, default 0.15, stratified)
    is held out of the training data, and the search (`search_trials`), per-epoch scores and early
    stopping all use it. Every method trains on the same examples and is scored on the same eval
    examples, then paired with the best (`eval.significance`).

    With `train_cfg.resume`, an interrupted compare continues: finished runs are reused (same
    settings only; their rows are not stored twice), a search continues its study, and an
    interrupted run resumes from its checkpoints. A method whose declared task or model kinds do
    not fit (`methods.base.capability_gap`) is skipped, never run: one line on the console and in
    the report's "Skipped" section.
    """
    settings = settings or CompareConfig()
    labels = run_labels(methods, model.model)
    twice = next((label for label in labels if labels.count(label) > 1), None)
    if twice is not None:  # both would write out/runs/<label>: the second would take the first's place
        name, _, on = twice.partition("@")
        raise LmadaptError(f"--methods lists {name} on {on or model.model} twice; list each method once per model")
    check_installed(parse_report_to(train_cfg.report_to))  # once here, not once per method
    entries: list[Entry] = []
    failures: list[str] = []
    skipped: list[str] = []
    space = load_space(settings.search_space)
    check_space_keys(space, [get_method(m).config_class for m, _ in methods])
    inputs = input_paths(model.model, None, train_task, eval_task).union(  # the data files once
        *(input_paths(m or model.model, configs[n]) for n, m in methods))
    # one subsample and one validation split for every method and seed
    train_task = train_task.subsample(train_cfg.max_train_examples or None, train_cfg.seed)
    eval_task = eval_task.subsample(train_cfg.max_eval_examples or None, train_cfg.seed)
    val_task = None
    if (fraction := train_cfg.validation_fraction(selecting=True)) > 0:
        train_task, val_task = validation_split(train_task, fraction, train_cfg.seed)
    elif settings.search_trials:
        raise LmadaptError("search_trials needs a validation set; leave val_split at its default or set it > 0")
    run_cfg = dataclasses.replace(train_cfg, max_train_examples=0, max_eval_examples=0)
    with atomic_dir(Path(out), overwrite=overwrite, inputs=inputs, resume=train_cfg.resume) as work:
        store = RunStore(work / "runs.sqlite")
        for i, ((name, model_ref), label) in enumerate(zip(methods, labels, strict=True), start=1):
            spec = dataclasses.replace(model, model=model_ref) if model_ref else model
            try:
                gap = capability_gap(get_method(name), train_task, spec)
            except LmadaptError:
                gap = None  # e.g. a model that cannot be found: tune says so, as a failure
            if gap is not None:
                skipped.append(f"- `{label}`: {gap}")
                console.print(f"[yellow]{label} skipped:[/yellow] {gap}")
                continue
            console.rule(f"[{i}/{len(methods)}] {name} on {spec.model}")
            try:
                entry = _run_method(name, label, spec, train_task, val_task, eval_task, configs[name], run_cfg,
                                    settings, space, work, store)
            except ResumeRefused:
                raise
            except LmadaptError as err:
                failures.append(f"- `{label}` failed: {err}")
                console.print(f"[red]{label} failed:[/red] {err}")
                continue
            except Exception as err:  # keep the other methods' results; the report says what broke
                failures.append(f"- `{label}` crashed: {type(err).__name__}: {err}")
                console.print(f"[red]{label} crashed:[/red]\n{traceback.format_exc(limit=3)}")
                continue
            r = entry.record
            console.print(f"{label}: {r.metric} = {r.score:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]"
                          + (f" over {len(r.seed_scores)} seeds" if len(r.seed_scores) > 1 else ""))
            entries.append(entry)
        if not entries:
            what = "every method failed" if not skipped else "no method ran"
            raise LmadaptError(f"{what}: " + "; ".join(f.lstrip("- ") for f in skipped + failures))
        unpaired = pair_with_best(entries, settings.alpha, train_cfg.seed)
        records = [e.record for e in entries]
        atomic_write_text(work / "results.jsonl",
                          "".join(json.dumps(dataclasses.asdict(r)) + "\n" for r in records))
        advice = recommend(records, Budgets.from_config(settings), settings.alpha,
                           examples_needed(entries), unpaired)
        notes = ((notes or []) + (["## Skipped", "", *skipped, ""] if skipped else [])
                 + (["## Failures", "", *failures, ""] if failures else []))
        curves = learning_curves(records, {e.label: e.run_dirs[0] for e in entries}, work / "learning_curves.png")
        text = markdown_report(records, title, notes, recommendation=advice, curves=curves)
        atomic_write_text(work / "report.md", text)
        pareto_plot(records, work / "pareto.png")
        html_report(text, work, work / "report.html")
    print_table(records, title)
    for line in advice:
        if line.startswith("**"):
            console.print(line.replace("**", ""))
    return records


def _run_method(name: str, label: str, spec: ModelSpec, train_task: Task, val_task: Task | None,
                eval_task: Task, cfg: Any, train_cfg: TrainConfig, settings: CompareConfig,
                space: dict, work: Path, store: RunStore) -> Entry:
    """Search (on validation), then train the chosen configuration with each seed and score it on
    the eval set; the Entry sums the seeds up."""
    chosen, found = {}, None
    searched = method_space(name, cfg, space) if settings.search_trials and val_task is not None else {}
    if searched:
        found = search(label, name, spec, train_task, val_task, cfg, train_cfg, searched, settings.search_trials,
                       settings.search_storage, work, run_settings(name, cfg, spec, train_cfg, train_task))
        chosen = found.params
        if not chosen:
            console.print(f"[yellow]{label}: no search trial finished; using the defaults[/yellow]")
    method_cfg, chosen_cfg = apply_params(chosen, cfg, train_cfg)
    records, run_dirs = [], []
    for k in range(settings.seeds):
        run_dir = work / "runs" / label if settings.seeds == 1 else work / "runs" / label / f"seed-{k}"
        seed_cfg = dataclasses.replace(chosen_cfg, seed=train_cfg.seed + k)
        if settings.seeds > 1:
            console.print(f"{label}: seed {k + 1} of {settings.seeds}")
        # the best trial trained this very configuration with the first seed: score its fit instead
        fitted = found.run_dir if found is not None and k == 0 else None
        records.append(tune(name, spec, train_task, eval_task, method_cfg, seed_cfg, run_dir, store,
                            lock=False, reuse_finished=train_cfg.resume, val_task=val_task, fitted_run=fitted))
        run_dirs.append(run_dir)
        if fitted is not None:
            shutil.rmtree(fitted, ignore_errors=True)
            remove_empty(fitted.parent)
    per_example = _per_example(run_dirs, len(eval_task.examples))
    record = summarise(records, per_example, train_cfg.seed)
    record.label, record.selected = label, dict(chosen)
    if found is not None:
        record.search_trials = found.trials
        record.val_score = found.value if found.value is not None else record.val_score
    return Entry(label, record, run_dirs, per_example)


def _per_example(run_dirs: list[Path], n: int) -> np.ndarray | None:
    """(seeds, examples) per-example eval scores from the runs' predictions.jsonl; None when a
    run's method gave none."""
    rows = []
    for run_dir in run_dirs:
        path = run_dir / "predictions.jsonl"
        text = path.read_text(encoding="utf-8")  # split on newlines only: texts may hold U+2028 and kin
        lines = [json.loads(line) for line in text.split("\n") if line.strip()]
        if len(lines) != n or any("score" not in line for line in lines):
            return None
        rows.append([float(line["score"]) for line in lines])
    return np.array(rows, dtype=float)


def summarise(records: list[RunRecord], per_example: np.ndarray | None, seed: int) -> RunRecord:
    """One record for several seeds of one configuration: the mean score, its spread, and a CI that
    resamples examples and seeds; costs are the first seed's (the others' are alike)."""
    first = records[0]
    if len(records) == 1:
        return dataclasses.replace(first, seed_scores=[first.score])
    scores = [r.score for r in records]
    low, high = (seeds_and_examples_ci(per_example, seed=seed) if per_example is not None
                 else (min(r.ci_low for r in records), max(r.ci_high for r in records)))
    vals = [r.val_score for r in records if r.val_score is not None]
    return dataclasses.replace(
        first, score=float(np.mean(scores)), ci_low=low, ci_high=high, seed_scores=scores,
        score_sd=float(np.std(scores, ddof=1)),
        macro_f1=float(np.mean([r.macro_f1 for r in records])) if first.macro_f1 is not None else None,
        train_seconds=float(np.mean([r.train_seconds for r in records])),
        val_score=float(np.mean(vals)) if vals else None)


def pair_with_best(entries: list[Entry], alpha: float, seed: int) -> list[str]:
    """Fill each record's diff_vs_best (with CI), p_vs_best (Holm) and tied_best against the best
    method with per-example scores; returns the labels that could not be paired."""
    paired = {e.label: e.per_example.mean(axis=0) for e in entries if e.per_example is not None}
    unpaired = [e.label for e in entries if e.per_example is None]
    if not paired:
        return unpaired
    best = min((e for e in entries if e.label in paired), key=lambda e: rank_key(e.record)).label
    results = compare_to_best(paired, best, alpha, seed=seed)
    for e in entries:
        if (r := results.get(e.label)) is not None:
            e.record.diff_vs_best, e.record.diff_ci_low, e.record.diff_ci_high = r.diff, r.ci_low, r.ci_high
            e.record.p_vs_best, e.record.tied_best = r.p_holm, r.tied_best
    return unpaired


def examples_needed(entries: list[Entry]) -> int | None:
    """Eval examples a paired test would need to separate the top two paired methods."""
    paired = sorted((e for e in entries if e.per_example is not None), key=lambda e: rank_key(e.record))
    if len(paired) < 2:
        return None
    return examples_to_separate(paired[0].per_example.mean(axis=0), paired[1].per_example.mean(axis=0))
