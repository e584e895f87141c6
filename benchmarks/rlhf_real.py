"""The real RLHF run of docs/rlhf.md: a MiniLM reward model from Rotten Tomatoes, then PPO (and DPO)
on SmolLM2-135M with a LoRA policy continuing review openings. CPU-sized (~20 minutes on a busy 2-core CPU).

    LMADAPT_HOME=/tmp/lmh python benchmarks/rlhf_real.py --out runs/rlhf_real

Data (seeded, disjoint):
- preference pairs: prompt "Movie review:", chosen = a fresh review, rejected = a rotten review;
- prompts: "Movie review: " + the first 4 words of held-out reviews (fresh and rotten openings).
Each stage runs the `lmadapt rlhf ...` command printed above its output, and the script ends
with a JSON summary (also written to OUT/summary.json).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import subprocess
import sys
import time
from pathlib import Path

PROMPT = "Movie review:"


def build_data(out: Path, n_train: int, n_eval: int, n_prompts: int, n_eval_prompts: int, seed: int) -> dict:
    """Write pairs_train/pairs_eval/prompts_train/prompts_eval JSONL files under out/data."""
    from lmadapt.assets import pull_data

    rows = [json.loads(line) for line in Path(pull_data("rotten-tomatoes")).read_text().splitlines() if line.strip()]
    rng = random.Random(seed)
    rng.shuffle(rows)
    fresh = [r["text"] for r in rows if r["label"] == "fresh" and 6 <= len(r["text"].split()) <= 40]
    rotten = [r["text"] for r in rows if r["label"] == "rotten" and 6 <= len(r["text"].split()) <= 40]
    n_pairs = n_train + n_eval
    pairs = [{"prompt": PROMPT, "chosen": f, "rejected": r} for f, r in zip(fresh[:n_pairs], rotten[:n_pairs], strict=False)]
    openings = [t for pair in zip(fresh[n_pairs:], rotten[n_pairs:], strict=False) for t in pair]  # alternate fresh/rotten
    prompts = [{"prompt": f"{PROMPT} " + " ".join(t.split()[:4])} for t in openings[: n_prompts + n_eval_prompts]]
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    files = {"pairs_train": pairs[:n_train], "pairs_eval": pairs[n_train:],
             "prompts_train": prompts[:n_prompts], "prompts_eval": prompts[n_prompts:]}
    for name, items in files.items():
        (data / f"{name}.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    return {name: str(data / f"{name}.jsonl") for name in files}


def run(cmd: list[str], threads: int) -> float:
    """Run one lmadapt command (printed first); returns its wall time in seconds."""
    print(f"$ OMP_NUM_THREADS={threads} " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    began = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/rlhf_real"))
    parser.add_argument("--pairs", type=int, default=1000, help="training preference pairs")
    parser.add_argument("--eval-pairs", type=int, default=400)
    parser.add_argument("--prompts", type=int, default=192)
    parser.add_argument("--eval-prompts", type=int, default=32)
    parser.add_argument("--ppo-steps", type=int, default=12)
    parser.add_argument("--ppo", default="rollout_batch=8 minibatch=4 ppo_epochs=2 lr=5e-4 kl_coef=0.05 "
                        "max_new_tokens=24 eval_samples=1 lora_r=8 lora_targets=all-linear")
    parser.add_argument("--dpo-pairs", type=int, default=128, help="0 skips the DPO stage")
    parser.add_argument("--dpo-eval-pairs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy shared CPU)")
    args = parser.parse_args()
    files = build_data(args.out, args.pairs, args.eval_pairs, args.prompts, args.eval_prompts, seed=0)
    exe = [str(Path(sys.executable).with_name("lmadapt"))]
    times = {}
    times["reward"] = run(exe + ["rlhf", "reward", "--model", "minilm", "--train", files["pairs_train"],
                                 "--eval", files["pairs_eval"], "--out", str(args.out / "reward"),
                                 "epochs=1", "batch_size=16", "max_length=96", "lr=1e-4", "eval_batch_size=64"], args.threads)
    times["ppo"] = run(exe + ["rlhf", "ppo", "--model", "smollm2-135m", "--prompts", files["prompts_train"],
                              "--eval-prompts", files["prompts_eval"], "--reward", str(args.out / "reward"),
                              "--out", str(args.out / "ppo"), f"steps={args.ppo_steps}", *args.ppo.split()], args.threads)
    summary = {"reward": json.loads((args.out / "reward" / "record.json").read_text()),
               "ppo": json.loads((args.out / "ppo" / "record.json").read_text())}
    if args.dpo_pairs:
        dpo_train = args.out / "data" / "pairs_dpo.jsonl"
        dpo_train.write_text("".join(Path(files["pairs_train"]).read_text().splitlines(True)[: args.dpo_pairs]))
        dpo_eval = args.out / "data" / "pairs_eval_dpo.jsonl"
        dpo_eval.write_text("".join(Path(files["pairs_eval"]).read_text().splitlines(True)[: args.dpo_eval_pairs]))
        times["dpo"] = run(exe + ["rlhf", "dpo", "--model", "smollm2-135m", "--train", str(dpo_train),
                                  "--eval", str(dpo_eval), "--out", str(args.out / "dpo"), "epochs=1",
                                  "batch_size=8", "max_length=96", "beta=0.1", "eval_batch_size=16"], args.threads)
        summary["dpo"] = json.loads((args.out / "dpo" / "record.json").read_text())
    brief = {stage: {"metric": r["metric"], "score": r["score"], "ci": [r["ci_low"], r["ci_high"]],
                     "extra": r["extra"], "wall_s": round(times[stage], 1)} for stage, r in summary.items()}
    (args.out / "summary.json").write_text(json.dumps(brief, indent=2))
    print(json.dumps(brief, indent=2))


if __name__ == "__main__":
    main()
