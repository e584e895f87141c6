"""The one data flow: Task → Method.fit → Adapted → evaluate → RunRecord (+ artifact on disk).

Run folder layout (written to `.NAME.partial/`, renamed to NAME when complete):
    lmadapt.json      what to rebuild the adapted model from (method, configs, model, task meta)
    artifact/         the method's files (PEFT folder, safetensors, demonstration pool, ...) and
                      README.md, the model card (report/card.py)
    record.json       the RunRecord
    predictions.jsonl eval inputs with gold and predicted targets
                      (predictions.partial.jsonl while the eval runs: generated predictions as
                      they finish, which `resume=true` continues from)
    train_log.jsonl   loss per optimizer step (trainable methods)
    runs.sqlite       the run store
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lmadapt.data.task import KINDS, Task, overlap_count, validation_split
from lmadapt.errors import LmadaptError, ResumeRefused
from lmadapt.eval.metrics import default_metric
from lmadapt.eval.prediction_log import (
    PARTIAL,
    PredictionLog,
    has_predictions,
    recording,
    saved_settings,
)
from lmadapt.manifest import (
    MANIFEST_KEYS,
    TaskMeta,
    build,
    check_fingerprint,
    load_path,
    model_fingerprint,
    path_fields,
    read_json_object,
    section,
    store_path,
)
from lmadapt.methods import get_method, retired_note
from lmadapt.methods.base import Adapted, RunContext, check_capabilities
from lmadapt.models.load import ModelSpec
from lmadapt.outdir import input_paths
from lmadapt.report.card import write_model_card
from lmadapt.report.record import PeakMemory, RunRecord, RunStore, hardware, versions
from lmadapt.train.config import TrainConfig
from lmadapt.train.loop import TrainResult, epoch_scores
from lmadapt.train.trackers import log_record, tracking
from lmadapt.utils import atomic_dir, atomic_write_text, dir_bytes, seed_everything

MANIFEST = "lmadapt.json"


@dataclass
class Evaluation:
    predictions: list[str]
    scores: dict[str, Any]
    seconds: float
    reused: int = 0  # predictions an interrupted run had already made (resume)
    per_example: list[float] | None = None  # one score per example (None: the method gives none)

    @property
    def examples_per_second(self) -> float:
        made = len(self.predictions) - self.reused
        return made / self.seconds if self.seconds > 0 else 0.0


def evaluate(adapted: Adapted, task: Task, batch_size: int = 32, seed: int = 0,
             log: PredictionLog | None = None) -> Evaluation:
    """Predict every example of task and score it (metric with a bootstrap 95% CI) by the adapted
    model's `evaluate`: a match against the targets, unless the method scores otherwise (an RLHF
    policy by its reward, a distill student by its answer checker). With `log`, generated
    predictions are appended to it batch by batch and those it holds are reused (resume)."""
    began = time.perf_counter()
    with recording(log):
        predictions, scores = adapted.evaluate(task, seed, batch_size)
    scores = dict(scores)
    per_example = scores.pop("per_example", None)
    return Evaluation(predictions, scores, time.perf_counter() - began, log.reused if log else 0,
                      None if per_example is None else [float(v) for v in per_example])


def _manifest(method: str, method_cfg: Any, model: ModelSpec, train_cfg: TrainConfig, task: Task,
              run_dir: Path | None = None) -> dict:
    """lmadapt.json: what to rebuild the adapted model from. Local model paths (and the method
    config's path fields) are stored resolved (lmadapt.manifest.store_path), so the run folder
    works from any directory; hub ids and pull names stay as given."""
    method_dict = asdict(method_cfg)
    for name in path_fields(type(method_cfg)):
        method_dict[name] = store_path(method_dict[name], run_dir)
    return {"format": 1, "method": method, "method_config": method_dict,
            "model": {**asdict(model), "model": store_path(model.model, run_dir)},
            "model_config": model_fingerprint(model.model, model.trust_remote_code),
            "train": asdict(train_cfg), "task": task.meta()}


# Train settings that do not shape the weights a checkpoint holds (a resume may change them;
# loss_chunk: the same loss in smaller pieces, e.g. to resume a run that ran out of memory).
RESUME_FREE = ("resume", "save_every", "eval_batch_size", "report_to", "loss_chunk")


def run_settings(method: str, method_cfg: Any, model: ModelSpec, train_cfg: TrainConfig, train_task: Task) -> dict:
    """What shapes a run's training: method, its config, model, train config, data fingerprint.
    Checkpoints and finished runs are reused (`resume=true`) only under the same settings."""
    return {"method": method, "method_config": asdict(method_cfg),
            "model": {k: v for k, v in asdict(model).items() if k != "device"},
            "train": {k: v for k, v in asdict(train_cfg).items() if k not in RESUME_FREE},
            "task": _task_settings(train_task), "data_sha256": data_sha256(train_task)}


def _task_settings(task: Task) -> dict:
    """The task's settings but its name; the metric only when not the kind's default (a finished
    run is reused only under its metric, and runs from before `metric=` still resume)."""
    meta = {k: v for k, v in task.meta().items() if k != "name"}
    if meta.get("metric") == default_metric(task.kind):
        del meta["metric"]
    if not meta.get("stop"):  # runs from before stop= still resume
        meta.pop("stop", None)
    return meta


def first_difference(old: Any, new: Any, key: str = "") -> tuple[str, Any, Any] | None:
    """The first dotted key where two settings trees differ, with both values; None if equal."""
    if isinstance(old, dict) and isinstance(new, dict):
        for k in [*old, *(k for k in new if k not in old)]:
            if (diff := first_difference(old.get(k), new.get(k), f"{key}.{k}" if key else k)) is not None:
                return diff
        return None
    return None if old == new else (key or "settings", old, new)


def _refuse_changed(where: Path, saved: dict, settings: dict, what: str) -> None:
    """ResumeRefused naming the first key where `settings` (as JSON stores them: tuples are
    lists) differs from the `saved` ones."""
    saved, settings = _with_train_defaults(saved), _with_train_defaults(json.loads(json.dumps(settings)))
    if (diff := first_difference(saved, settings)) is not None:
        key, old, new = diff
        if key in ("data_sha256", "eval_data_sha256"):
            old, new = "other examples", "these"
        raise ResumeRefused(f"cannot resume from {where}: {key} was {old!r} in its {what}, now {new!r}; "
                           "rerun with the same settings, or without resume=true to start over")


def _with_train_defaults(settings: dict) -> dict:
    """settings with every train setting present, missing ones at their defaults: a run saved
    before a train setting existed resumes while that setting stays at its default."""
    if not isinstance(settings.get("train"), dict):
        return settings
    defaults = json.loads(json.dumps(asdict(TrainConfig())))
    train = {k: v for k, v in defaults.items() if k not in RESUME_FREE}
    return {**settings, "train": {**train, **settings["train"]}}


def check_resume(work: Path, settings: dict, resume: bool) -> None:
    """Refuse to resume checkpoints written under other settings (they stay on disk); record this
    run's settings beside the checkpoints it will write."""
    checkpoints = work / "checkpoints"
    saved = checkpoints / "settings.json"
    if resume and any(checkpoints.glob("step-*")):
        if not saved.is_file():
            raise ResumeRefused(f"cannot resume from {checkpoints}: it holds no settings.json (an older "
                               "lmadapt wrote it); rerun without resume=true to start over")
        try:
            old = json.loads(saved.read_text(encoding="utf-8"))
        except ValueError:
            raise LmadaptError(f"cannot resume: {saved} is not valid JSON; rerun without resume=true") from None
        _refuse_changed(checkpoints, old, settings, "checkpoints")
    atomic_write_text(saved, json.dumps(settings, indent=2))


def data_sha256(task: Task) -> str:
    """A fingerprint of a task's examples (their order included)."""
    data = hashlib.sha256()
    for ex in task.examples:
        data.update(json.dumps(asdict(ex), sort_keys=True, default=str).encode() + b"\n")
    return data.hexdigest()


def prediction_log(work: Path, settings: dict, eval_task: Task, resume: bool) -> PredictionLog:
    """The log the final eval writes its predictions to as they finish (`predictions.partial.jsonl`).
    With `resume`, the predictions an interrupted run made there are kept, only under the same
    settings (the run's and the eval examples'); else the file starts afresh."""
    settings = {**settings, "eval_data_sha256": data_sha256(eval_task)}
    log = PredictionLog(work / PARTIAL, settings)
    if resume and has_predictions(log.path):
        saved = saved_settings(log.path)
        if saved is None:
            raise ResumeRefused(f"cannot resume from {log.path}: it holds no settings line; rerun without "
                               "resume=true to start over")
        _refuse_changed(log.path, saved, log.settings, "predictions")
    log.start(resume)
    return log


def finished_run(run_dir: Path, settings: dict) -> RunRecord | None:
    """The record of a finished run in run_dir made under `settings` (a resumed compare reuses
    it); None when there is none; a one-line error when it was made under other settings."""
    run_dir = Path(run_dir)
    if not (run_dir / "record.json").is_file() or not (run_dir / MANIFEST).is_file():
        return None
    try:
        saved = json.loads((run_dir / MANIFEST).read_text(encoding="utf-8")).get("settings")
        record = RunRecord.from_dict(json.loads((run_dir / "record.json").read_text(encoding="utf-8")))
    except (ValueError, TypeError, AttributeError):
        return None  # unreadable: run it again
    if saved is None:
        return None
    _refuse_changed(run_dir, saved, settings, "finished run")
    return record


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def tune(method: str, model: ModelSpec, train_task: Task, eval_task: Task, method_cfg: Any,
         train_cfg: TrainConfig, out: Path, store: RunStore | None = None, overwrite: bool = False,
         lock: bool = True, reuse_finished: bool = False, val_task: Task | None = None,
         fitted_run: Path | None = None) -> RunRecord:
    """Fit `method` on train_task, score it on eval_task, write the run folder `out`.

    Every choice the training makes (per-epoch scores, early stopping) watches `val_task`, or a
    validation set held out of train_task (`val_split`); the eval set is scored once, at the end.
    With no validation set (val_split 0), the method watches the eval set and nothing is selected.

    `out` must be new, empty or an earlier lmadapt run (else `overwrite=True`); it is locked for
    the whole run (`lock=False`: a folder inside one the caller already holds, as compare does).
    With `train_cfg.resume`, training continues from the newest checkpoint of an interrupted run
    in `out` (same settings only); `reuse_finished` returns a finished run's record as it is.
    `fitted_run`: a finished run made under the same settings but scored on another set (a
    compare's best search trial, scored on validation): its fit is loaded instead of trained
    again (the training is deterministic under those settings) and scored on eval_task; the
    record keeps that fit's training figures. Under other settings it is ignored.
    """
    impl = get_method(method)
    if not isinstance(method_cfg, impl.config_class):
        raise TypeError(f"{method} expects a {impl.config_class.__name__}")
    check_capabilities(impl, train_task, model)
    train_task = train_task.subsample(train_cfg.max_train_examples or None, train_cfg.seed)
    eval_task = eval_task.subsample(train_cfg.max_eval_examples or None, train_cfg.seed)
    if val_task is None and (fraction := train_cfg.validation_fraction(selecting=False)) > 0:
        train_task, val_task = validation_split(train_task, fraction, train_cfg.seed)
    if train_cfg.early_stop_patience and val_task is None:
        raise LmadaptError("early_stop_patience needs a validation set; set val_split (e.g. val_split=0.15)")
    settings = run_settings(method, method_cfg, model, train_cfg, train_task)
    if reuse_finished and (record := finished_run(Path(out), settings)) is not None:
        if store is not None:
            store.add(record)
        return record
    # a nested run (lock=False, inside a compare) is checked by its caller, which passes its inputs
    inputs = input_paths(model.model, method_cfg, train_task, eval_task) if lock else ()
    with (atomic_dir(Path(out), overwrite=overwrite, inputs=inputs, lock=lock, resume=train_cfg.resume) as work,
          tracking(train_cfg.report_to, work, Path(out).name, settings)):  # report_to: closed before the move
        check_resume(work, settings, train_cfg.resume)
        log = prediction_log(work, settings, eval_task, train_cfg.resume)
        seed_everything(train_cfg.seed)
        ctx = RunContext(model=model, train=train_cfg, work_dir=work)
        watching = epoch_scores() if val_task else nullcontext()  # every epoch scored on validation
        fitted = _fitted(fitted_run, settings, model)
        with PeakMemory() as memory:
            if fitted is not None:
                adapted, result, fitted_record = fitted
            else:
                with watching:
                    adapted, result = impl.fit(train_task, val_task or eval_task, method_cfg, ctx)
            evaluation = evaluate(adapted, eval_task, train_cfg.eval_batch_size, train_cfg.seed, log)
            with recording(log):  # a method's own generations for its figures resume too (proxy: its parts)
                extra = adapted.figures(eval_task)
        extra = {**extra, "train_eval_overlap": overlap_count(train_task, eval_task)}  # eval texts trained on
        if fitted is not None:
            memory.peak = max(memory.peak, fitted_record.peak_memory_bytes)  # the fit's own peak (it trained elsewhere)
            extra["fit_from"] = f"{Path(fitted_run).parent.name}/{Path(fitted_run).name}"
        adapted.save(work / "artifact")
        manifest = {**_manifest(method, method_cfg, model, train_cfg, train_task), "settings": settings}
        atomic_write_text(work / MANIFEST, json.dumps(manifest, indent=2))
        values = evaluation.per_example or [None] * len(evaluation.predictions)
        _write_jsonl(work / "predictions.jsonl", [
            {"text": ex.text, "target": ex.target, "prediction": p, **({"score": v} if v is not None else {})}
            for ex, p, v in zip(eval_task.examples, evaluation.predictions, values, strict=True)])
        log.remove()
        if result is not None and result.losses:
            _write_jsonl(work / "train_log.jsonl", [{"step": i + 1, "loss": loss} for i, loss in enumerate(result.losses)]
                         + [{"epoch_eval": e} for e in result.epoch_evals])
        record = RunRecord(
            method=method, model=model.model, task=train_task.name, **evaluation.scores,
            # a loaded fit is frozen for inference: its trainable count is the one it trained with
            trainable_params=fitted_record.trainable_params if fitted else adapted.trainable_params,
            total_params=fitted_record.total_params if fitted else adapted.total_params,
            peak_memory_bytes=memory.peak,
            train_seconds=result.seconds if result is not None else 0.0,
            eval_examples_per_second=evaluation.examples_per_second,
            artifact_bytes=dir_bytes(work / "artifact"), seed=train_cfg.seed, versions=versions(),
            train_examples=len(train_task.examples), eval_examples=len(eval_task.examples),
            train_steps=result.steps if result else 0,
            train_tokens_per_second=result.tokens_per_second if result else 0.0,
            eval_latency_ms=1000 * evaluation.seconds / max(1, len(evaluation.predictions)),
            final_loss=result.losses[-1] if result and result.losses else None,
            hardware=hardware(), created=time.strftime("%Y-%m-%dT%H:%M:%S"),
            config={"method": asdict(method_cfg), "train": asdict(train_cfg)}, extra=extra,
            **_selection(val_task, result))
        record.write(work / "record.json")
        log_record(record)
        write_model_card(record, manifest, work / "artifact")
        RunStore(work / "runs.sqlite").add(record)
    if store is not None:
        store.add(record)
    return record


def _fitted(run_dir: Path | None, settings: dict, model: ModelSpec) -> tuple[Adapted, TrainResult, RunRecord] | None:
    """(adapted, training result, record) of the finished run in run_dir when it was
    trained under `settings`; None when there is none or its settings differ."""
    if run_dir is None or (record := _finished_under(Path(run_dir), settings)) is None:
        return None
    adapted = load_run(run_dir, device=model.device, trust_remote_code=model.trust_remote_code)[0]
    rows = [json.loads(line) for line in (Path(run_dir) / "train_log.jsonl").read_text(encoding="utf-8").split("\n")
            if line.strip()] if (Path(run_dir) / "train_log.jsonl").is_file() else []
    seconds = record.train_seconds
    result = TrainResult(steps=record.train_steps, seconds=seconds,
                         tokens=round(record.train_tokens_per_second * seconds),
                         losses=[r["loss"] for r in rows if "loss" in r],
                         epoch_evals=[r["epoch_eval"] for r in rows if "epoch_eval" in r], best_epoch=record.best_epoch)
    return adapted, result, record


def _finished_under(run_dir: Path, settings: dict) -> RunRecord | None:
    """finished_run, but None (not an error) when run_dir was made under other settings."""
    try:
        return finished_run(run_dir, settings)
    except ResumeRefused:
        return None


def _selection(val_task: Task | None, result: Any) -> dict:
    """The record's selection fields: what the choices were made on, and the kept epoch's score
    (the best epoch's under early stopping, else the last epoch's)."""
    rows = result.epoch_evals if result is not None else []
    if val_task is None:
        return {"selection": "none: defaults, per-epoch scores on the eval set" if rows else "none: defaults"}
    kept = getattr(result, "best_epoch", None)
    evals = {row["epoch"]: row["score"] for row in rows}
    score = evals.get(kept) if kept is not None else (rows[-1]["score"] if rows else None)
    return {"selection": f"validation (n={len(val_task.examples)})", "val_examples": len(val_task.examples),
            "val_score": score, "best_epoch": kept}


def read_manifest(run_dir: Path) -> dict:
    """run_dir's lmadapt.json as a dict; one line naming the file when it is missing or not a JSON
    object with a method name (the sections are checked by load_run)."""
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        raise LmadaptError(f"{run_dir} is not an lmadapt run folder (no {MANIFEST}); pass the --out of a tune run")
    manifest = read_json_object(path)
    unknown = [k for k in manifest if k not in MANIFEST_KEYS]
    if unknown:
        raise LmadaptError(f"{path}: unknown key {unknown[0]!r}; known: {', '.join(MANIFEST_KEYS)}")
    if manifest.get("format") != 1:
        raise LmadaptError(f"{path}: format {manifest.get('format')!r} is not 1; "
                           "it was written by another lmadapt version, or edited")
    method = section(manifest, "method", path)
    if not isinstance(method, str) or not method:
        raise LmadaptError(f"{path}: method = {method!r} is not a method name")
    if (note := retired_note(method)) is not None:
        raise LmadaptError(f"{run_dir} {note}")
    for key in ("method_config", "model", "train", "task"):
        if not isinstance(section(manifest, key, path), dict):
            raise LmadaptError(f"{path}: section {key!r} must be an object, found {type(manifest[key]).__name__}")
    if not isinstance(manifest["model"].get("model"), str) or not manifest["model"]["model"]:
        raise LmadaptError(f"{path}: model.model is missing or not a model reference")
    return manifest


def load_run(run_dir: Path, device: str | None = None, trust_remote_code: bool = False) -> tuple[Adapted, Task, dict]:
    """Rebuild the adapted model saved in run_dir; returns (adapted, task skeleton, manifest).

    A run folder is data: its manifest never turns on `trust_remote_code` (only the caller's
    `trust_remote_code`, e.g. `--trust-remote-code`, does) and loading imports no code it names
    (an rlhf run's Python reward is imported only when `lmadapt eval --reward` asks for it; its
    reward run folder is loaded by the reward method on first use).
    Relative paths in the manifest are looked up inside run_dir first."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    path = run_dir / MANIFEST
    try:
        impl = get_method(manifest["method"])
    except LmadaptError as err:
        raise LmadaptError(f"{path}: {err}") from None
    method_cfg = build(impl.config_class, section(manifest, "method_config", path), "method_config", path)
    for name in path_fields(impl.config_class):
        method_cfg = dataclasses.replace(method_cfg, **{name: load_path(getattr(method_cfg, name), run_dir)})
    model = build(ModelSpec, section(manifest, "model", path), "model", path, required=("model",))
    model = dataclasses.replace(model, model=load_path(model.model, run_dir), trust_remote_code=trust_remote_code,
                                device=device or model.device)
    base_gone = Path(model.model).is_absolute() and not Path(model.model).exists()
    if not base_gone:
        check_fingerprint(manifest.get("model_config"), model.model, trust_remote_code, path)
    train_cfg = build(TrainConfig, section(manifest, "train", path), "train", path)
    meta = build(TaskMeta, section(manifest, "task", path), "task", path, required=("kind",))
    if meta.kind not in KINDS:
        raise LmadaptError(f"{path}: task.kind = {meta.kind!r} is not one of {', '.join(KINDS)}")
    settings = {k: v for k, v in dataclasses.asdict(meta).items() if k not in ("name", "kind", "labels")}
    task = Task.skeleton(meta.name, meta.kind, list(meta.labels), **settings)
    artifact = run_dir / "artifact"
    if not artifact.is_dir():
        raise LmadaptError(f"{run_dir} has no artifact/ folder; the run folder is incomplete")
    ctx = RunContext(model=model, train=train_cfg, work_dir=run_dir)
    try:
        adapted = impl.load(artifact, task, method_cfg, ctx)
    except LmadaptError:
        if base_gone:  # the likely cause, named with the file to edit
            raise LmadaptError(f"{path}: model {model.model} does not exist; put the base model back there, "
                               "or edit model.model to where it is now") from None
        raise
    except (RuntimeError, ValueError, KeyError, IndexError, TypeError, OSError, AttributeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise LmadaptError(f"{path}: the {manifest['method']} artifact in {artifact} does not load with model "
                           f"{model.model!r} ({type(err).__name__}: {first}); is model the one it was trained on?") from None
    return adapted, task, manifest
