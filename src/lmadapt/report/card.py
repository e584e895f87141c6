"""Model cards: the README.md a run's artifact (and a merged model) is shared with.

Hugging Face model-card Markdown (https://huggingface.co/docs/hub/model-cards): YAML front matter
with the hub's metadata keys (`base_model`, `library_name`, `pipeline_tag`, `tags`, `datasets`,
`metrics`, and `model-index` for the score), an `lmadapt` block with the score's 95% CI (the hub's
`model-index` has no field for one), then the body: what was adapted, how to load it, the
record's numbers and the settings. Built from the record and the manifest only, so the same run
gives the same card (its one time stamp is the record's `created`).

A local model path is never written: `base_model` is a hub id (a pull name's hub repo, a hub id as
given, or a local folder's recorded hub origin) or left out.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lmadapt.methods.peft_common.build import LABELS_FILE
from lmadapt.report.compare import human
from lmadapt.report.record import RunRecord
from lmadapt.utils import atomic_write_text

# `org/name` on the hub; a name without `org/` (gpt2) counts only where nothing else can be meant
HUB_MODEL_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
BARE_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*$")
PEFT_AUTO = {"SEQ_CLS": "AutoModelForSequenceClassification", "CAUSAL_LM": "AutoModelForCausalLM",
             "SEQ_2_SEQ_LM": "AutoModelForSeq2SeqLM"}
PIPELINES = {"AutoModelForSequenceClassification": "text-classification",
             "AutoModelForCausalLM": "text-generation", "AutoModelForSeq2SeqLM": "text2text-generation"}
SHAREABLE = ("adapter", "model")  # artifact subfolders that are HF folders: a PEFT adapter, full weights


@dataclass(frozen=True)
class Weights:
    """What an artifact folder holds, read from its files."""

    library: str  # peft | transformers | lmadapt (needs lmadapt to load)
    folder: str  # the HF folder inside the artifact ("adapter", "model"; "" = the folder itself or none)
    auto_class: str = ""  # the transformers Auto class that loads it (or its base, for peft)
    labels_file: bool = False  # a PEFT folder with labels.json (an encoder classifier's label names)


def weights_in(artifact: Path) -> Weights:
    """A merged/plain model folder (config.json), a PEFT folder (adapter/), full weights (model/),
    or files only lmadapt loads."""
    artifact = Path(artifact)
    if (artifact / "config.json").is_file():
        return Weights("transformers", "", _auto_from_config(artifact / "config.json"))
    if (artifact / "adapter" / "adapter_config.json").is_file():
        task_type = _json(artifact / "adapter" / "adapter_config.json").get("task_type")
        return Weights("peft", "adapter", PEFT_AUTO.get(str(task_type), "AutoModel"),
                       (artifact / "adapter" / LABELS_FILE).is_file())
    if (artifact / "model" / "config.json").is_file():
        return Weights("transformers", "model", _auto_from_config(artifact / "model" / "config.json"))
    return Weights("lmadapt", "")


def _json(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _auto_from_config(path: Path) -> str:
    """The Auto class for the architecture a config.json names (BertForSequenceClassification → ...)."""
    config = _json(path)
    arch = (config.get("architectures") or [""])[0]
    if arch.endswith("ForSequenceClassification"):
        return "AutoModelForSequenceClassification"
    if arch.endswith("ForCausalLM"):
        return "AutoModelForCausalLM"
    if config.get("is_encoder_decoder") or arch.endswith("ForConditionalGeneration"):
        return "AutoModelForSeq2SeqLM"
    return "AutoModel"


def hub_model_id(ref: str) -> str | None:
    """The hub id of a run's model reference, or None: a pull name's hub repo, a hub id as given,
    a pulled folder's hub repo, a local folder whose config.json `_name_or_path` is `org/name`.
    Never a local path."""
    from lmadapt.assets.cache import model_dir
    from lmadapt.assets.registry import MODELS

    if ref in MODELS:
        return MODELS[ref].hub_id
    path = Path(ref).expanduser()
    if path.exists():
        for name, asset in MODELS.items():
            if model_dir(name).exists() and model_dir(name).resolve() == path.resolve():
                return asset.hub_id
        origin = _json(path / "config.json").get("_name_or_path") if path.is_dir() else None
        return origin if isinstance(origin, str) and HUB_MODEL_ID.match(origin) and not Path(origin).exists() else None
    if HUB_MODEL_ID.match(ref) or BARE_HUB_ID.match(ref):  # not on disk, no pull name: loaded from the hub
        return ref
    return None


def hub_dataset_id(task_name: str) -> str | None:
    """The task's data as the hub (or `lmadapt pull`) names it, or None for a local file."""
    from lmadapt.assets.registry import DATASETS

    name = task_name.split(":")[0]
    if name in DATASETS or HUB_MODEL_ID.match(name):
        return name
    return None


def front_matter(record: RunRecord, manifest: dict, weights: Weights, merged: bool = False) -> dict:
    """The card's YAML metadata (keys in the order the hub's template uses)."""
    task = manifest.get("task", {})
    kind = str(task.get("kind", ""))
    base = hub_model_id(str(manifest.get("model", {}).get("model", record.model)))
    dataset = hub_dataset_id(str(task.get("name", record.task)))
    meta: dict[str, Any] = {}
    if base:
        meta["base_model"] = base
    meta["library_name"] = weights.library
    if weights.auto_class in PIPELINES:
        meta["pipeline_tag"] = PIPELINES[weights.auto_class]
    meta["tags"] = list(dict.fromkeys(["lmadapt", record.method, kind] + (["merged"] if merged else [])))
    if dataset:
        meta["datasets"] = [dataset]
    meta["metrics"] = [record.metric]
    ci = f"95% CI {record.ci_low:.4f} to {record.ci_high:.4f}, n={record.eval_examples}"
    meta["model-index"] = [{"name": f"{record.method} on {record.task}", "results": [{
        "task": {"type": "text-classification" if kind == "classification" else "text-generation", "name": kind},
        "dataset": {"name": str(task.get("name", record.task)), "type": dataset or str(task.get("name", record.task))},
        "metrics": [{"type": record.metric, "value": float(record.score), "name": f"{record.metric} ({ci})"}]}]}]
    meta["lmadapt"] = {
        "version": str(record.versions.get("lmadapt", "")), "method": record.method, "task_kind": kind,
        "metric": record.metric, "score": float(record.score), "ci_low": float(record.ci_low),
        "ci_high": float(record.ci_high), "ci": "bootstrap 95% over eval examples" + (
            " and seeds" if record.seed_scores else ""),
        "eval_examples": int(record.eval_examples), "seed": int(record.seed), "created": record.created}
    if labels := [str(label) for label in task.get("labels") or []]:
        meta["lmadapt"]["labels"] = labels
    if merged:
        meta["lmadapt"]["merged"] = True
    return meta


def model_card(record: RunRecord, manifest: dict, artifact: Path, merged: bool = False) -> str:
    """The README.md for `artifact` (a run's artifact folder, or with `merged` a merged model folder):
    YAML front matter, then what was adapted, how to load it, the numbers and the settings."""
    weights = weights_in(artifact)
    meta = front_matter(record, manifest, weights, merged)
    task = manifest.get("task", {})
    labels = meta["lmadapt"].get("labels", [])
    base = meta.get("base_model")
    model_type = manifest.get("model_config", {}).get("model_type")
    base_text = (f"`{base}`" + (f" ({model_type})" if model_type else "") if base
                 else f"a local {model_type or ''} model (no hub id known)".replace("  ", " "))
    lines = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(), "---", "",
             f"# {record.method} on {record.task}", "",
             f"Adapted with lmadapt {meta['lmadapt']['version']} by the method **{record.method}** "
             f"({_summary(record.method)}) on a {task.get('kind', '')} task (`{record.task}`). "
             f"Base model: {base_text}."
             + (" The adapter is merged into the base weights (`lmadapt merge`); the numbers are the run's, "
                "measured before merging (merging leaves the outputs as they were, up to rounding)." if merged else ""),
             ""]
    if labels:
        lines += [f"Labels ({len(labels)}): " + ", ".join(f"{i} = `{name}`" for i, name in enumerate(labels)), ""]
    lines += ["## How to load", "", *_loading(weights, base, labels, merged), ""]
    lines += ["## Results", "", "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in _numbers(record)), ""]
    lines += ["## Settings", "", "As `key=value` settings of `lmadapt tune`.", "",
              "| | settings |", "|---|---|", *(f"| {k} | {v} |" for k, v in _settings(record, manifest)), ""]
    lines += ["## Versions", "", ", ".join(f"{k} {v}" for k, v in sorted(record.versions.items())), ""]
    return "\n".join(lines)


def _summary(method: str) -> str:
    from lmadapt.methods import REGISTRY

    cls = REGISTRY.get(method)
    return getattr(cls, "summary", "") or "an lmadapt method"


def _loading(weights: Weights, base: str | None, labels: list[str], merged: bool) -> list[str]:
    """The loading snippet for the artifact's form."""
    where = "this folder" if merged else f"`RUN/artifact/{weights.folder}` in the run folder RUN"
    predict = ["With lmadapt, " + ("on the run it was merged from:" if merged else "from the run folder:"), "", "```bash",
               'lmadapt predict RUN --text "an input"', "```"]
    if weights.library == "lmadapt":
        return ["This method's artifact needs lmadapt to load (it is no Hugging Face model folder).", "",
                *predict]
    folder = "path/to/model" if weights.library == "transformers" else "path/to/adapter"
    code = [f'folder = "{folder}"  # {where}, or the hub repo it was pushed to']
    kwargs = ""
    if labels and weights.auto_class == "AutoModelForSequenceClassification":
        code.append(f"id2label = {dict(enumerate(labels))!r}")
        kwargs = (f", num_labels={len(labels)}, id2label=id2label,\n    "
                  "label2id={name: i for i, name in id2label.items()}")
    if weights.library == "peft":
        code = ["from peft import PeftModel", f"from transformers import {weights.auto_class}, AutoTokenizer", "", *code,
                f'base = {weights.auto_class}.from_pretrained("{base or "path/to/base-model"}"{kwargs})'
                + ("" if base else "  # the local base model it was trained on"),
                "model = PeftModel.from_pretrained(base, folder).eval()",
                "tokenizer = AutoTokenizer.from_pretrained(folder)"]
        note = ("The folder holds the adapter only; the base model comes from "
                + (f"`{base}`." if base else "the local model it was trained on.")
                + (f" Its label names are also in `{LABELS_FILE}` there." if weights.labels_file else ""))
    else:
        code = [f"from transformers import {weights.auto_class}, AutoTokenizer", "",
                code[0], f"model = {weights.auto_class}.from_pretrained(folder).eval()",
                "tokenizer = AutoTokenizer.from_pretrained(folder)"]
        note = "Full weights: the folder loads alone" + (
            "; its config.json holds `id2label`/`label2id`." if labels and
            weights.auto_class == "AutoModelForSequenceClassification" else ".")
    if labels and weights.auto_class != "AutoModelForSequenceClassification":
        note += (" lmadapt classifies with a language model by each label's log-likelihood after the "
                 "prompt, not by free text; `lmadapt predict` does that.")
    return [note, "", "```python", *code, "```", "", *predict]


def _numbers(record: RunRecord) -> list[tuple[str, str]]:
    """The record's figures as (name, value) rows."""
    runs = f"mean of {len(record.seed_scores)} seeds, " if record.seed_scores else ""
    rows = [(record.metric, f"{record.score:.4f} (95% CI {record.ci_low:.4f} to {record.ci_high:.4f}; "
                            f"{runs}{record.eval_examples} eval examples)")]
    if record.macro_f1 is not None:
        rows.append(("macro-F1", f"{record.macro_f1:.4f}"))
    if record.seed_scores:
        rows.append(("seed scores", ", ".join(f"{s:.4f}" for s in record.seed_scores)
                     + (f" (sd {record.score_sd:.4f})" if record.score_sd is not None else "")))
    share = record.trainable_params / record.total_params if record.total_params else 0.0
    rows += [("trainable / total params", f"{record.trainable_params:,} / {record.total_params:,} ({share:.2%})"),
             ("train", f"{record.train_seconds:.1f} s, {record.train_steps} steps, "
                       f"{record.train_examples} examples"),
             ("peak memory", human(record.peak_memory_bytes, "B") + (f" ({record.hardware})" if record.hardware else "")),
             ("eval latency", f"{record.eval_latency_ms:.1f} ms per example"),
             ("artifact size", human(record.artifact_bytes, "B")),
             ("selection", record.selection or "not recorded")]
    if record.val_score is not None:
        rows.append(("validation score", f"{record.val_score:.4f} ({record.val_examples} examples)"))
    if record.selected:
        rows.append(("search chose", ", ".join(f"`{k}={v}`" for k, v in sorted(record.selected.items()))
                     + f" ({record.search_trials} trials)"))
    if record.best_epoch is not None:
        rows.append(("kept epoch", str(record.best_epoch)))
    rows += [("seed", str(record.seed)), ("created", record.created or "not recorded")]
    return rows


def _settings(record: RunRecord, manifest: dict) -> list[tuple[str, str]]:
    """(group, its settings as `key=value` items) for the method's and the train settings, as the
    user gave them (the record's config; the manifest's for a record without one)."""
    config = record.config or {"method": manifest.get("method_config", {}), "train": manifest.get("train", {})}
    rows = []
    for group, title in (("method", f"method ({record.method})"), ("train", "train")):
        items = []
        for key, value in (config.get(group) or {}).items():
            text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
            text = (text if len(text) <= 60 else text[:57] + "...").replace("|", "\\|").replace("`", "'")
            items.append(f"`{key}={text}`")
        rows.append((title, " ".join(items) or "(none)"))
    return rows


def write_model_card(record: RunRecord, manifest: dict, artifact: Path, merged: bool = False) -> str:
    """Write the card as artifact/README.md and, for a PEFT or full-weights subfolder (the folder one
    pushes to the hub), as its README.md too, replacing peft's empty template there."""
    artifact = Path(artifact)
    card = model_card(record, manifest, artifact, merged)
    atomic_write_text(artifact / "README.md", card)
    folder = weights_in(artifact).folder
    if folder in SHAREABLE:
        atomic_write_text(artifact / folder / "README.md", card)
    return card
