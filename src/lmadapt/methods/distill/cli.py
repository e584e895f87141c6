"""`lmadapt distill rationales | train` (mounted on the main app as `lmadapt distill`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

distill_app = typer.Typer(no_args_is_help=True, help="Distilling Step-by-Step: teacher rationales, student training.")

DataArg = Annotated[str, typer.Option(help="rationale JSONL (input/label/rationale) or a release folder as DIR:SPLIT")]


@distill_app.command("rationales")
def rationales_cmd(
    teacher: Annotated[str, typer.Option(help="teacher causal LM: hub id, local path or pull name")],
    data: Annotated[str, typer.Option(help="inputs: JSONL with input (+ label), or DIR:SPLIT")],
    shots: Annotated[Path, typer.Option(help="few-shot CoT demonstrations: JSONL with input, rationale, label")],
    out: Annotated[Path, typer.Option(help="output JSONL (appended; finished ids are skipped on resume)")],
    batch_size: Annotated[int, typer.Option(help="prompts per generation batch")] = 8,
    max_new_tokens: Annotated[int, typer.Option(help="longest completion in tokens")] = 128,
    limit: Annotated[int, typer.Option(help="generate for at most N inputs (0 = all)")] = 0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | mps")] = "auto",
    dtype: Annotated[str, typer.Option(help="float32 | bfloat16 | float16")] = "float32",
) -> None:
    """Few-shot chain-of-thought rationales from a teacher; writes input/label/rationale/teacher_label rows."""
    from lmadapt.methods.distill.rationales import generate_rationales
    from lmadapt.models.load import ModelSpec

    report = generate_rationales(ModelSpec(model=teacher, dtype=dtype, device=device), data, shots, out,
                                 batch_size=batch_size, max_new_tokens=max_new_tokens, limit=limit)
    print(report.line(), file=sys.stderr)
    print(out)


@distill_app.command("train", context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def train_cmd(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", "-m", help="student: causal LM or seq2seq (T5) model")],
    train: DataArg,
    eval: Annotated[str, typer.Option("--eval", help="eval data (same forms as --train)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder")] = Path("runs/distill"),
    fractions: Annotated[str, typer.Option(help="e.g. 0.125,0.25,0.5,1.0: DSS vs label-only at each fraction")] = "",
    variants: Annotated[str, typer.Option(help="with --fractions: which of dss,label-only to run here")] = "dss,label-only",
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML file of settings")] = None,
    dtype: Annotated[str, typer.Option(help="float32 | bfloat16 | float16")] = "float32",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N | mps")] = "auto",
) -> None:
    """Train a DSS student (settings as key=value: distill_alpha=0.5 distill_student=lora epochs=2 ...)."""
    from lmadapt.config import build_configs, load_yaml, parse_overrides
    from lmadapt.methods.distill.config import DistillConfig
    from lmadapt.methods.distill.data import load_rationale_task
    from lmadapt.methods.distill.fractions import parse_fractions, parse_variants, run_fractions
    from lmadapt.models.load import ModelSpec
    from lmadapt.train.config import TrainConfig

    settings = {**load_yaml(config), **parse_overrides(ctx.args)}
    configs = build_configs([TrainConfig, DistillConfig], settings)
    train_task, report = load_rationale_task(train)
    print(f"{train}: {report.line()}", file=sys.stderr)
    eval_task, _ = load_rationale_task(eval)
    spec = ModelSpec(model=model, dtype=dtype, device=device)
    if fractions:
        run_fractions(train_task, eval_task, configs[DistillConfig], spec, configs[TrainConfig],
                      parse_fractions(fractions), out, parse_variants(variants))
        print((out / "fractions.md").read_text())
        print(out / "fractions.md")
        return
    record = ctx.obj.tune("distill", spec, train_task, eval_task, configs[DistillConfig], configs[TrainConfig], out)
    print(f"distill on {train_task.name}: {record.metric} = {record.score:.4f} "
          f"[{record.ci_low:.4f}, {record.ci_high:.4f}]")
    print(out / "record.json")
