"""One AdamW step over a model's weights, as full fine-tuning takes it: torch's default
per-tensor loop, its foreach kernels and its fused kernel (what lmadapt's loop uses where it
applies, `train/loop.py: adamw`).

    python benchmarks/adamw_step.py --model smollm2-135m --threads 2 --out adamw_step.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

VARIANTS = {"per-tensor loop (torch default on CPU)": {"foreach": False}, "foreach": {"foreach": True},
            "fused": {"fused": True}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="pull name, hub id or path")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: every core)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant (after one untimed)")
    parser.add_argument("--out", default="adamw_step.json")
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM

    from lmadapt.models.load import resolve_model_ref

    if args.threads:
        torch.set_num_threads(args.threads)
    path = resolve_model_ref(args.model)  # a pull name is pulled on first use
    params = list(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).parameters())
    generator = torch.Generator().manual_seed(0)
    for p in params:
        p.grad = torch.randn(p.shape, generator=generator) * 1e-3
    rows = []
    for name, options in VARIANTS.items():
        optimizer = torch.optim.AdamW(params, lr=1e-5, **options)
        optimizer.step()  # state allocated outside the timing
        seconds = []
        for _ in range(args.steps):
            began = time.perf_counter()
            optimizer.step()
            seconds.append(time.perf_counter() - began)
        rows.append({"variant": name, "options": options, "median_s": statistics.median(seconds), "runs_s": seconds})
        del optimizer
    base = rows[0]["median_s"]
    result = {"model": args.model, "parameters": sum(p.numel() for p in params),
              "threads": torch.get_num_threads(), "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"{args.model}: {result['parameters'] / 1e6:.1f}M weights, {result['threads']} threads, "
          f"median of {args.steps} steps\n\n| AdamW | s/step | vs per-tensor loop |\n|---|---:|---:|")
    for row in rows:
        print(f"| {row['variant']} | {row['median_s']:.3f} | {base / row['median_s']:.1f}x |")


if __name__ == "__main__":
    main()
