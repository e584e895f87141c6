"""What a generation cap costs the base model of a proxy-tuning run: its answers that hit
`max_new_tokens`, continued greedily for up to --extra more tokens, then scored again.

The base's texts come from the run's prediction log (`predictions.partial.jsonl`, call 1 = the
base alone; a copy taken before the run finished, since a finished run removes the log). A seeded
random --sample of the cut answers is continued (prompt + logged answer, re-tokenized) and the
base's score without the cap is estimated as (right among uncut + cut x share right after
continuing) / n, with a bootstrap 95% CI over the sample. Prints the figures and writes JSON.

    python benchmarks/proxy_cap.py LOG --model qwen2.5-coder-1.5b --eval gsm-symbolic:test \\
        --max-eval 150 --cap 256 --extra 192 --sample 20 --out proxy_cap.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM

from lmadapt.assets import resolve_data
from lmadapt.data.chat import prompt_messages
from lmadapt.data.loaders import load_task
from lmadapt.decoding.config import GenerationConfig
from lmadapt.decoding.engine import as_source, complete, eos_ids_for, pad_id_of
from lmadapt.eval.metrics import per_example_scores
from lmadapt.eval.prediction_log import logged_predictions, prompt_key
from lmadapt.models.chat import chat_template_for, end_of_turn_id, render
from lmadapt.models.load import load_tokenizer, resolve_model_ref


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", type=Path, help="a proxy run's predictions.partial.jsonl (or a copy)")
    parser.add_argument("--model", required=True, help="the run's base model")
    parser.add_argument("--eval", required=True, help="the run's eval data")
    parser.add_argument("--max-eval", type=int, default=0, help="the run's max_eval_examples")
    parser.add_argument("--seed", type=int, default=0, help="the run's seed (eval subsample) and the sample's")
    parser.add_argument("--metric", default="numeric")
    parser.add_argument("--call", type=int, default=1, help="the log's call holding the base's answers")
    parser.add_argument("--cap", type=int, default=256, help="the run's max_new_tokens")
    parser.add_argument("--extra", type=int, default=192, help="most tokens added to a cut answer")
    parser.add_argument("--sample", type=int, default=20, help="cut answers continued (0: all)")
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="proxy_cap.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    task = load_task(resolve_data(args.eval)).subsample(args.max_eval or None, args.seed)
    ref = resolve_model_ref(args.model)
    tokenizer = load_tokenizer(ref, "causal")
    template = chat_template_for(tokenizer, task, args.model)
    if template is None:
        raise SystemExit("error: this script reads chat runs (the base's prompts rendered with its chat template)")
    prompts = {}
    for example in task.examples:
        prompt = render(tokenizer, template, prompt_messages(example.text), generation_prompt=True)
        prompts[prompt_key(prompt)] = (prompt, example.target)
    base = {key: text for (call, key), text in logged_predictions(args.log).items() if call == args.call}
    keys = sorted(prompts)
    if set(base) != set(keys):
        raise SystemExit(f"error: the log's call {args.call} holds {len(base)} answers, not the {len(keys)} eval prompts")

    def n_tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    cut = sorted(k for k in keys if n_tokens(base[k]) >= args.cap - 1)
    chosen = cut
    if args.sample and args.sample < len(cut):
        picks = np.random.default_rng(args.seed).choice(len(cut), args.sample, replace=False)
        chosen = [cut[i] for i in sorted(picks)]
    print(f"{len(cut)} of {len(keys)} base answers hit the {args.cap}-token cap; "
          f"continuing {len(chosen)} by up to {args.extra} tokens", flush=True)

    model = AutoModelForCausalLM.from_pretrained(ref, dtype=torch.float32).eval()
    source = as_source(model, tokenizer)
    eot = end_of_turn_id(tokenizer, template)
    eos = eos_ids_for(source, tokenizer, [eot] if eot is not None else [])
    ids = {k: tokenizer(prompts[k][0], add_special_tokens=False)["input_ids"]
           + tokenizer(base[k], add_special_tokens=False)["input_ids"] for k in chosen}
    order = sorted(chosen, key=lambda k: -len(ids[k]))
    longer, start = {}, time.time()
    with torch.inference_mode():
        for i in range(0, len(order), args.batch):
            chunk = order[i:i + args.batch]
            texts = complete(source, tokenizer, [ids[k] for k in chunk], GenerationConfig(max_new_tokens=args.extra),
                             eos, pad_id_of(tokenizer))
            for k, text in zip(chunk, texts, strict=True):
                longer[k] = base[k] + text
            print(f"{i + len(chunk)}/{len(order)} continued, {time.time() - start:.0f} s", flush=True)

    at_cap = dict(zip(keys, per_example_scores([base[k] for k in keys], [prompts[k][1] for k in keys], args.metric),
                      strict=True))
    sample_after = per_example_scores([longer[k] for k in chosen], [prompts[k][1] for k in chosen], args.metric)
    uncut_right = sum(at_cap[k] for k in set(keys) - set(cut))
    rng = np.random.default_rng(args.seed)
    boots = [sample_after[rng.integers(0, len(chosen), len(chosen))].mean() for _ in range(2000)]

    def estimate(share: float) -> float:
        return (uncut_right + len(cut) * share) / len(keys)

    result = {
        "n": len(keys), "cap": args.cap, "extra": args.extra, "cut": len(cut), "continued": len(chosen),
        "score_at_cap": float(np.mean(list(at_cap.values()))),
        "uncut_right": float(uncut_right),
        "cut_right_at_cap": float(np.mean([at_cap[k] for k in cut])) if cut else 0.0,
        "continued_right_at_cap": float(np.mean([at_cap[k] for k in chosen])) if chosen else 0.0,
        "continued_right_after": float(sample_after.mean()) if chosen else 0.0,
        "still_cut": sum(n_tokens(longer[k]) >= args.cap + args.extra - 1 for k in chosen),
        "estimate_without_cap": estimate(float(sample_after.mean())) if chosen else None,
        "estimate_ci": [estimate(float(np.percentile(boots, 2.5))), estimate(float(np.percentile(boots, 97.5)))],
        "seconds": round(time.time() - start),
        "continued_answers": {k: longer[k] for k in chosen},
    }
    Path(args.out).write_text(json.dumps(result, indent=1))
    print("| n | cut at cap | continued | right at cap (continued) | right after +extra (continued) "
          "| still cut | base at cap | base without cap, estimate (95% CI) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {result['n']} | {result['cut']} | {result['continued']} | {result['continued_right_at_cap']:.3f} "
          f"| {result['continued_right_after']:.3f} | {result['still_cut']} | {result['score_at_cap']:.3f} "
          f"| {result['estimate_without_cap']:.3f} ({result['estimate_ci'][0]:.3f}–{result['estimate_ci'][1]:.3f}) |")


if __name__ == "__main__":
    main()
