"""`lmadapt merge`: fold a run's adapter into its base model, as a plain HF model folder (peft
merge_and_unload), for the methods that declare `mergeable` (LoRA, IA3).

LoRA: W ← W + (α/r) B A; (IA)³: W ← diag(l) W (K, V) or W diag(l_ff) (FFN). The merged folder
loads with `AutoModelFor...from_pretrained` alone and gives the same outputs as base + adapter;
an encoder classifier's config.json holds the task's label names (`id2label`/`label2id`), and
README.md is the run's model card.
"""

from __future__ import annotations

from pathlib import Path

from peft import PeftModel

from lmadapt.errors import LmadaptError
from lmadapt.manifest import read_json_object
from lmadapt.methods import REGISTRY, get_method
from lmadapt.outdir import check_out
from lmadapt.report.card import write_model_card
from lmadapt.report.record import RunRecord
from lmadapt.run import load_run, read_manifest
from lmadapt.utils import atomic_dir


def merge_run(run_dir: Path, out: Path, overwrite: bool = False, trust_remote_code: bool = False) -> Path:
    """Write run_dir's base model with its adapter merged in, as an HF model folder at out."""
    manifest = read_manifest(Path(run_dir))
    method = manifest["method"]
    check_out(out, overwrite=overwrite, inputs=(run_dir, manifest["model"]["model"]))  # before the load
    if not get_method(method).mergeable:
        able = ", ".join(name for name, cls in REGISTRY.items() if cls.mergeable)
        raise LmadaptError(f"cannot merge a {method!r} run: {get_method(method).merge_note}; only {able} runs merge")
    adapted, _, _ = load_run(Path(run_dir), device="cpu", trust_remote_code=trust_remote_code)
    record = RunRecord.from_dict(read_json_object(Path(run_dir) / "record.json"))
    model = adapted.tm.model
    if not isinstance(model, PeftModel):
        raise LmadaptError(f"{run_dir}: the loaded {method} model is not a PEFT model")
    merged = model.merge_and_unload()
    with atomic_dir(Path(out), overwrite=overwrite, inputs=(run_dir, manifest["model"]["model"])) as work:
        merged.save_pretrained(str(work), safe_serialization=True)  # a classifier: labels set by build_task_model
        adapted.tm.tokenizer.save_pretrained(str(work))
        write_model_card(record, manifest, work, merged=True)
    return Path(out)
