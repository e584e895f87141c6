"""Generation speed of lmadapt's decoding engine on real prompts: a model alone and proxy-tuned
(base + expert - anti-expert, three models per token), at the batch sizes given, with the time a
whole eval would take. It sizes runs such as docs/papers.md's proxy study before starting them.

    python benchmarks/decode_speed.py --threads 2 --out decode_speed.json
    python benchmarks/decode_speed.py --runs small:16,base:32 --eta-n 150 --eta-tokens 256

Prompts: the first problems of `--dataset` (chat rows, rendered with the base's chat template, as
`lmadapt tune` renders them). Each run generates `--steps` tokens per row, greedy, with no early
stop (EOS or stop strings); seconds per step include the prompt's prefill. The proxy run uses
the small model as both expert and anti-expert: its cost is that of a real proxy, its text not.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="qwen2.5-coder-1.5b", help="large model: pull name, hub id or path")
    parser.add_argument("--small", default="qwen2.5-coder-0.5b", help="small model sharing its tokenizer")
    parser.add_argument("--dataset", default="gsm-symbolic", help="a chat data set `lmadapt pull data` knows")
    parser.add_argument("--runs", default="small:16,base:16,base:32,proxy:16",
                        help="comma-separated WHO:BATCH, WHO one of small, base, proxy")
    parser.add_argument("--steps", type=int, default=48, help="tokens generated per row")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: every core)")
    parser.add_argument("--eta-n", type=int, default=150, help="problems in the eval the ETA is for")
    parser.add_argument("--eta-tokens", type=int, default=256, help="max_new_tokens the ETA is for")
    parser.add_argument("--out", default="decode_speed.json")
    args = parser.parse_args()
    runs = [(who, int(batch)) for who, batch in (item.split(":") for item in args.runs.split(","))]
    if bad := [who for who, _ in runs if who not in ("small", "base", "proxy")]:
        parser.error(f"unknown run {bad[0]!r}; use small, base or proxy")

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmadapt.assets import pull_data
    from lmadapt.data.loaders import DataSpec, load_task
    from lmadapt.decoding.config import GenerationConfig
    from lmadapt.decoding.engine import generate
    from lmadapt.decoding.sources import ProxySource
    from lmadapt.models.load import resolve_model_ref

    if args.threads:
        torch.set_num_threads(args.threads)
    paths = {who: resolve_model_ref(ref)  # pull names are pulled on first use
             for who, ref in (("base", args.base), ("small", args.small))}
    tokenizer = AutoTokenizer.from_pretrained(paths["base"])
    task = load_task(pull_data(args.dataset), DataSpec(), name=args.dataset)
    rows = task.examples[: max(batch for _, batch in runs)]
    prompts = [tokenizer.apply_chat_template(ex.as_dicts()[:-1], add_generation_prompt=True, tokenize=False)
               for ex in rows]
    answers = [len(tokenizer(ex.as_dicts()[-1]["content"])["input_ids"]) for ex in task.examples[:400]]
    data = {"prompt_tokens_mean": sum(len(tokenizer(p)["input_ids"]) for p in prompts) / len(prompts),
            "answer_tokens_mean": sum(answers) / len(answers),
            "answer_tokens_p90": sorted(answers)[int(0.9 * len(answers))], "answer_tokens_max": max(answers)}
    models = {}
    for who in ("base", "small"):
        if any(w in (who, "proxy") for w, _ in runs):
            models[who] = AutoModelForCausalLM.from_pretrained(paths[who], dtype=torch.float32).eval()
    cfg = GenerationConfig(max_new_tokens=args.steps, stop=[])
    results = []
    for who, batch in runs:
        source = (ProxySource(models["base"], models["small"], models["small"], alpha=1.0, vocab_size=len(tokenizer))
                  if who == "proxy" else models[who])
        began = time.perf_counter()
        with torch.inference_mode():
            texts = generate(source, tokenizer, prompts[:batch], cfg, batch_size=batch)
        seconds = time.perf_counter() - began
        tokens = sum(len(tokenizer(t)["input_ids"]) for t in texts)
        step = seconds / args.steps
        eta = math.ceil(args.eta_n / batch) * args.eta_tokens * step
        results.append({"run": who, "batch": batch, "seconds": round(seconds, 2), "step_seconds": round(step, 3),
                        "tokens": tokens, "tokens_per_second": round(tokens / seconds, 2), "eta_seconds": round(eta)})
        print(f"  {who} at batch {batch}: {step:.2f} s/step, {tokens / seconds:.1f} tok/s", flush=True)
    result = {"settings": {**vars(args), "threads": torch.get_num_threads()}, "data": data, "runs": results}
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"\n{args.dataset}: prompts {data['prompt_tokens_mean']:.0f} tokens on average; reference answers "
          f"{data['answer_tokens_mean']:.0f} on average, {data['answer_tokens_p90']} at p90, "
          f"{data['answer_tokens_max']} at most\n")
    print(f"| run | batch | s/step | tok/s | eval of {args.eta_n} at max_new_tokens {args.eta_tokens} (every batch to "
          f"the cap) |\n|---|---:|---:|---:|---:|")
    for row in results:
        print(f"| {row['run']} | {row['batch']} | {row['step_seconds']:.2f} | {row['tokens_per_second']:.1f} | "
              f"{row['eta_seconds'] / 3600:.1f} h |")


if __name__ == "__main__":
    main()
