"""`compare`: run several methods on the same data and render them side by side."""

from __future__ import annotations

import dataclasses
import json
import traceback
from pathlib import Path
from typing import Any

from rich.console import Console

from lmadapt.config import build_configs
from lmadapt.data.task import Task
from lmadapt.errors import LmadaptError, ResumeRefused
from lmadapt.methods import REGISTRY, get_method
from lmadapt.methods.base import capability_gap
from lmadapt.models.load import ModelSpec
from lmadapt.outdir import input_paths
from lmadapt.report.compare import markdown_report, pareto_plot, print_table
from lmadapt.report.record import RunRecord, RunStore
from lmadapt.run import tune
from lmadapt.train.config import TrainConfig
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


def method_configs(methods: list[tuple[str, str | None]], values: dict[str, Any]) -> dict[str, Any]:
    """Each method's config from the shared settings; a key must belong to some config."""
    classes = [get_method(m).config_class for m, _ in methods]
    owners = {f.name for cls in classes + [TrainConfig, ModelSpec] for f in dataclasses.fields(cls)}
    unknown = [k for k in values if k not in owners]
    if unknown:
        raise LmadaptError(f"unknown setting {unknown[0]!r} for methods {', '.join(m for m, _ in methods)}")
    built = build_configs(classes, values, strict=False)
    return {m: built[get_method(m).config_class] for m, _ in methods}


def compare(methods: list[tuple[str, str | None]], model: ModelSpec, train_task: Task, eval_task: Task,
            configs: dict[str, Any], train_cfg: TrainConfig, out: Path,
            title: str = "lmadapt compare", notes: list[str] | None = None,
            overwrite: bool = False) -> list[RunRecord]:
    """Run each method into out/runs/<method>; write results.jsonl, report.md, pareto.png.

    With `train_cfg.resume`, an interrupted compare continues: finished methods are reused (same
    settings only; their rows are not stored twice) and an interrupted one resumes from its checkpoints.
    A method whose declared task or model kinds do not fit (`methods.base.capability_gap`) is
    skipped, never run: one line on the console and in the report's "Skipped" section.
    """
    records: list[RunRecord] = []
    failures: list[str] = []
    skipped: list[str] = []
    inputs = input_paths(model.model, None, train_task, eval_task).union(  # the data files once
        *(input_paths(m or model.model, configs[n]) for n, m in methods))
    with atomic_dir(Path(out), overwrite=overwrite, inputs=inputs, resume=train_cfg.resume) as work:
        store = RunStore(work / "runs.sqlite")
        for i, (name, model_ref) in enumerate(methods, start=1):
            spec = dataclasses.replace(model, model=model_ref) if model_ref else model
            label = name if not model_ref else f"{name}@{Path(model_ref).name}"
            try:
                gap = capability_gap(get_method(name), train_task, spec)
            except LmadaptError:
                gap = None  # e.g. a model that cannot be found: tune says so, as a failure
            if gap is not None:
                skipped.append(f"- `{label}`: {gap}")
                console.print(f"[yellow]{label} skipped:[/yellow] {gap}")
                continue
            console.rule(f"[{i}/{len(methods)}] {name} on {spec.model}")
            run_dir = work / "runs" / label
            try:
                record = tune(name, spec, train_task, eval_task, configs[name], train_cfg, run_dir, store,
                              lock=False, reuse_finished=train_cfg.resume)
            except ResumeRefused:
                raise
            except LmadaptError as err:
                failures.append(f"- `{name}` failed: {err}")
                console.print(f"[red]{name} failed:[/red] {err}")
                continue
            except Exception as err:  # keep the other methods' results; the report says what broke
                failures.append(f"- `{name}` crashed: {type(err).__name__}: {err}")
                console.print(f"[red]{name} crashed:[/red]\n{traceback.format_exc(limit=3)}")
                continue
            console.print(f"{name}: {record.metric} = {record.score:.3f} "
                          f"[{record.ci_low:.3f}, {record.ci_high:.3f}]")
            records.append(record)
        if not records:
            what = "every method failed" if not skipped else "no method ran"
            raise LmadaptError(f"{what}: " + "; ".join(f.lstrip("- ") for f in skipped + failures))
        atomic_write_text(work / "results.jsonl",
                          "".join(json.dumps(dataclasses.asdict(r)) + "\n" for r in records))
        notes = ((notes or []) + (["## Skipped", "", *skipped, ""] if skipped else [])
                 + (["## Failures", "", *failures, ""] if failures else []))
        atomic_write_text(work / "report.md", markdown_report(records, title, notes))
        pareto_plot(records, work / "pareto.png")
    print_table(records, title)
    return records
