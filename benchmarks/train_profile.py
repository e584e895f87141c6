"""Where lmadapt's training step spends its time: one `benchmarks/train_speed.py` cell (the same
rows, settings and `lmadapt tune` path) run once under `torch.profiler`, the training loop only.

    python benchmarks/train_profile.py --dataset gsm-symbolic --setup lora --steps 4 --batch 4 --out profile.json

Prints the operators by self CPU time and writes them as JSON, with each one's share of the loop's
total and the step time. Profiling adds overhead; the shares, not the seconds, are the result.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_speed  # noqa: E402  (the benchmark's data and lmadapt child, shared)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="pull name, hub id or path")
    parser.add_argument("--dataset", choices=train_speed.DATASETS, default="gsm-symbolic")
    parser.add_argument("--setup", choices=tuple(train_speed.SETUPS), default="lora")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: every core)")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--packing", action="store_true")
    parser.add_argument("--top", type=int, default=15, help="operators to list")
    parser.add_argument("--out", default="train_profile.json")
    args = parser.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile

    import lmadapt.methods.base as methods_base
    from lmadapt.models.load import resolve_model_ref

    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    model_path = resolve_model_ref(args.model)  # a pull name is pulled on first use
    work = Path(tempfile.mkdtemp(prefix="train-profile-"))
    info = train_speed.prepare_data(args.dataset, args.steps * args.batch, 0, model_path, args.max_length, work)
    job = {**info, "setup": args.setup, "lr": train_speed.SETUPS[args.setup], "batch": args.batch,
           "max_length": args.max_length, "precision": "fp32", "seed": 0, "packing": args.packing,
           "model": model_path, "work": str(work), "steps": args.steps}
    plain_train, captured = methods_base.train, {}

    def profiled_train(*a, **k):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            result = plain_train(*a, **k)
        captured["events"] = prof.key_averages()
        return result

    methods_base.train = profiled_train  # every fit through the shared loop (lora, full) calls this one
    try:
        run = train_speed.child_lmadapt(job)
    finally:
        methods_base.train = plain_train
    events = sorted(captured["events"], key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    rows = [{"op": e.key, "self_cpu_s": round(e.self_cpu_time_total / 1e6, 3),
             "share": round(e.self_cpu_time_total / total, 4), "calls": e.count} for e in events[: args.top]]
    result = {"settings": {**vars(args), "threads": threads}, "step_seconds": run["train_seconds"] / run["steps"],
              "tokens": info["tokens"], "profiled_self_cpu_s": round(total / 1e6, 3), "top": rows}
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"{args.dataset} {args.setup}{' packed' if args.packing else ''}: {run['steps']} steps x batch "
          f"{args.batch}, {result['step_seconds']:.2f} s/step under the profiler, {threads} threads\n")
    print("| op | self CPU s | share | calls |\n|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row['op']} | {row['self_cpu_s']:.3f} | {100 * row['share']:.1f}% | {row['calls']} |")


if __name__ == "__main__":
    main()
