"""Does `torch.compile` pay off for LoRA training on this machine? (issue 15, part 4)

    python benchmarks/compile_speed.py --out compile_speed.json

SmolLM2-135M + peft LoRA (r 16, alpha 32, dropout 0, q/v), AdamW, batches of `--batch` random
token rows whose lengths vary from step to step (as padded batches of real data do), the loss on
one position per row (lmadapt's loop sends only target positions through the LM head, so the
decoder blocks are nearly all the work). Two setups, each in a fresh process, interleaved over
`--repeats`:
- eager: plain PyTorch;
- layers: each decoder block compiled with `module.compile(dynamic=True)` (per-block compile,
  the way torchtune does it, so hooks outside the blocks stay eager), with an empty inductor
  cache per process, so the first steps pay the whole compile.
Reports the first step (compile included), the median of the steps after the first 4, and the
steps after which the compiled run has caught up with eager (compile cost / per-step saving).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LENGTHS = [48, 64, 56, 72, 40, 64, 60, 52, 68, 44, 64, 58, 50, 62, 46, 70]


def child(setup: str, steps: int, batch: int) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from lmadapt.models.load import resolve_model_ref

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(resolve_model_ref("smollm2-135m"), dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0,
                                             target_modules=["q_proj", "v_proj"]))
    if setup == "layers":
        for layer in model.base_model.model.model.layers:
            layer.compile(dynamic=True)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    times = []
    for step in range(steps):
        ids = torch.randint(0, 49_000, (batch, LENGTHS[step % len(LENGTHS)]))
        began = time.perf_counter()
        logits = model(input_ids=ids, logits_to_keep=1, use_cache=False).logits
        torch.nn.functional.cross_entropy(logits[:, -1], ids[:, -1]).backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - began)
    print(json.dumps({"setup": setup, "step_seconds": times}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default="compile_speed.json")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.steps, args.batch)
        return
    runs = []
    for repeat in range(args.repeats):
        for setup in ("eager", "layers"):
            with tempfile.TemporaryDirectory() as cache:
                env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TORCHINDUCTOR_CACHE_DIR": cache}
                proc = subprocess.run([sys.executable, __file__, "--child", setup, "--steps", str(args.steps),
                                       "--batch", str(args.batch)], env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"{setup} failed: {proc.stderr.strip().splitlines()[-1:]}")
            times = json.loads(proc.stdout.strip().splitlines()[-1])["step_seconds"]
            row = {"setup": setup, "repeat": repeat, "first": times[0], "steady": statistics.median(times[4:]),
                   "total": sum(times), "step_seconds": times}
            runs.append(row)
            print(f"  {setup}-{repeat}: first step {row['first']:.2f} s, steady {row['steady']:.3f} s/step", flush=True)
    summary = {}
    for setup in ("eager", "layers"):
        mine = [r for r in runs if r["setup"] == setup]
        summary[setup] = {k: statistics.median(r[k] for r in mine) for k in ("first", "steady", "total")}
    saving = summary["eager"]["steady"] - summary["layers"]["steady"]
    extra = summary["layers"]["first"] - summary["eager"]["first"]
    summary["steady_speedup"] = summary["eager"]["steady"] / summary["layers"]["steady"]
    summary["break_even_steps"] = extra / saving if saving > 0 else None
    print(f"\nSmolLM2-135M LoRA r16 q/v, batch {args.batch}, lengths 40-72, {args.threads} threads, "
          f"{args.repeats} repeats (medians)\n")
    print("| setup | first step (s) | steady s/step | total for the run (s) |\n|---|---:|---:|---:|")
    for setup in ("eager", "layers"):
        s = summary[setup]
        print(f"| {setup} | {s['first']:.2f} | {s['steady']:.3f} | {s['total']:.1f} |")
    even = summary["break_even_steps"]
    print(f"\nsteady speed-up {summary['steady_speedup']:.2f}x; the compile pays for itself after "
          + (f"about {even:.0f} steps" if even is not None else "never (no per-step saving)"))
    Path(args.out).write_text(json.dumps({"settings": vars(args), "summary": summary, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
