"""Cost of each adaptation method on one model and batch shape: trainable parameters, peak
memory, train step time and tokens/s, measured through lmadapt's own training loop.

    python benchmarks/peft_cost.py --model minilm --batch-size 16 --seq-len 64 --steps 6 \
        --out docs/peft_cost.json > docs/peft_cost.md

Each method runs in its own subprocess so peak memory (CUDA max-allocated, else peak RSS) is
that method's alone. The first optimizer step is warm-up and left out of the step time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def default_methods(model: str) -> list[str]:
    """Every method that trains with the shared loop on a classification task and can use this
    model's kind (each method declares both on its class)."""
    from lmadapt.methods import REGISTRY
    from lmadapt.models.load import load_config, model_kind, resolve_model_ref

    kind = model_kind(load_config(resolve_model_ref(model)))
    return [name for name, cls in REGISTRY.items()
            if cls.trains and "classification" in cls.task_kinds and kind in cls.model_kinds]


def measure(method: str, model: str, batch_size: int, seq_len: int, steps: int) -> dict:
    """Train `method` for `steps` optimizer steps on synthetic (batch_size, seq_len) batches."""
    import tempfile
    from pathlib import Path

    from lmadapt.data.task import Example, Task
    from lmadapt.methods import get_method
    from lmadapt.methods.base import RunContext
    from lmadapt.models.load import ModelSpec
    from lmadapt.report.record import PeakMemory
    from lmadapt.train.config import TrainConfig

    words = "the film was good and the plot was bad but the acting was fine".split()
    text = " ".join(words[i % len(words)] for i in range(seq_len * 2))  # truncated to seq_len tokens
    examples = [Example(text, ["pos", "neg"][i % 2]) for i in range(batch_size * steps)]
    task = Task("synthetic", "classification", examples, labels=["pos", "neg"], template="{text}\nLabel:")
    cfg = TrainConfig(epochs=1, batch_size=batch_size, max_length=seq_len, eval_each_epoch=False, lr=1e-4)
    impl = get_method(method)
    with tempfile.TemporaryDirectory() as work, PeakMemory() as memory:
        began = time.perf_counter()
        adapted, result = impl.fit(task, None, impl.config_class(), RunContext(ModelSpec(model), cfg, Path(work)))
        wall = time.perf_counter() - began
    step_time = result.seconds / max(1, result.steps)
    return {"method": method, "trainable_params": adapted.trainable_params, "total_params": adapted.total_params,
            "peak_memory_mb": round(memory.peak / 2**20, 1), "step_seconds": round(step_time, 4),
            "tokens_per_second": round(result.tokens_per_second, 1), "fit_seconds": round(wall, 2)}


def table(rows: list[dict], header: str) -> str:
    lines = [header, "", "| method | trainable params | % of total | peak memory (MB) | step (s) | tokens/s |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['method']} | — | — | — | — | {r['error'][:80]} |")
            continue
        share = 100 * r["trainable_params"] / max(1, r["total_params"])
        lines.append(f"| {r['method']} | {r['trainable_params']:,} | {share:.3f}% | {r['peak_memory_mb']:.0f} "
                     f"| {r['step_seconds']:.3f} | {r['tokens_per_second']:.0f} |")
    return "\n".join(lines)


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="hub id, local path or pull name")
    parser.add_argument("--methods", default="", help="comma-separated (default: every method that "
                        "trains on classification with this model's kind)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--out", default="", help="write the rows as JSON here")
    parser.add_argument("--one", default="", help=argparse.SUPPRESS)  # internal: measure one method
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.model, args.batch_size, args.seq_len, args.steps)))
        return
    rows = []
    for method in args.methods.split(",") if args.methods else default_methods(args.model):
        cmd = [sys.executable, __file__, "--model", args.model, "--one", method, "--batch-size",
               str(args.batch_size), "--seq-len", str(args.seq_len), "--steps", str(args.steps)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["failed"])[-1]
            rows.append({"method": method, "error": last})
        else:
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"{method}: {rows[-1]}", file=sys.stderr)
    if args.out:
        with open(args.out, "w") as handle:
            json.dump({"model": args.model, "batch_size": args.batch_size, "seq_len": args.seq_len,
                       "steps": args.steps, "rows": rows}, handle, indent=2)
    print(table(rows, f"model `{args.model}`, batch {args.batch_size} × {args.seq_len} tokens, "
                      f"{args.steps} steps, {device_name()}"))


if __name__ == "__main__":
    main()
