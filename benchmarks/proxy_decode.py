"""Benchmark proxy-tuning decode speed against base-only decoding, with a memory roofline.

Modes, each at every batch size:
  base          the base model alone (ModelSource)
  proxy2        base + expert + anti-expert as three models (ProxySource); the small side's
                LM head runs once, on h+ - h- (both small models share it)
  shared        base + ONE small LoRA model (SharedLoraProxySource, batch_rows=False): two
                B-row passes per step, adapter on then off, head once on h+ - h-
  shared-2B     the same, but one 2B-row pass, LoRA on for the expert rows only (the default)
  proxy2-plain  proxy2 with each small model's own head (no shared-head step)
  shared-plain  shared-2B with each row's own head (the two-row layout alone)

Per decode step we time the steady state (median interval between steps, prefill excluded;
modes interleaved so background load hits them alike), and
compare with a roofline: weight bytes read per step / measured memory bandwidth (a large
tensor copy). Decoding at small batch is memory-bound, so that ratio bounds the speed.

Targets (CPU):
  proxy2 cost <= 1.15 * (1 + 2 * P_small / P_base) * base cost
  shared small side <= 0.6 * proxy2 small side, where small side = mode cost - base cost
  (the faster of shared / shared-2B counts)

    python benchmarks/proxy_decode.py                      # random-init Llamas (~370M, ~55M)
    python benchmarks/proxy_decode.py --base DIR --small DIR  # real local models
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time
from functools import partial
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from lmadapt.decoding import GenerationConfig, ModelSource, ProxySource, SharedLoraProxySource
from lmadapt.decoding.engine import decode_batch
from lmadapt.decoding.vocab import output_width
from lmadapt.utils import atomic_write_text


def parse_args() -> argparse.Namespace:
    """Command-line flags (sizes, batches, tokens, output path)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--base", type=Path, help="Local folder of a real base model (else random init).")
    add("--small", type=Path, help="Local folder of a real small model, same tokenizer as --base.")
    add("--base-hidden", type=int, default=1024, help="Random base: hidden size.")
    add("--base-layers", type=int, default=24, help="Random base: layers.")
    add("--base-intermediate", type=int, default=2816, help="Random base: MLP width.")
    add("--small-hidden", type=int, default=512, help="Random small: hidden size.")
    add("--small-layers", type=int, default=8, help="Random small: layers.")
    add("--small-intermediate", type=int, default=1408, help="Random small: MLP width.")
    add("--vocab", type=int, default=32000, help="Random models: vocabulary size.")
    add("--lora-rank", type=int, default=16, help="LoRA rank of the shared-base expert.")
    add(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16", "float16"],
        help="Weights dtype.",
    )
    add("--batches", default="1,8", help="Comma-separated batch sizes.")
    add(
        "--modes",
        default="base,proxy2,shared,shared-2B,proxy2-plain,shared-plain",
        help="Comma-separated modes; base, proxy2 and shared are needed for the target check.",
    )
    add("--prompt-len", type=int, default=16, help="Prompt tokens per row.")
    add("--new-tokens", type=int, default=24, help="Decode steps timed per run.")
    add("--repeats", type=int, default=2, help="Runs per cell; the median step time counts.")
    add("--threads", type=int, default=0, help="torch threads (0 = torch default).")
    add(
        "--out",
        type=Path,
        default=Path("proxy_decode.json"),
        help="Where to write the JSON results.",
    )
    return parser.parse_args()


def random_llama(
    hidden: int, layers: int, intermediate: int, vocab: int, seed: int
) -> LlamaForCausalLM:
    """A random-init Llama with 64-dim heads and 4x grouped-query attention."""
    torch.manual_seed(seed)
    heads = max(hidden // 64, 1)
    config = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=max(heads // 4, 1),
        vocab_size=vocab,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).eval()


def weight_bytes_per_step(model: torch.nn.Module) -> int:
    """Bytes of weights one decode step reads: everything but the input embedding table
    (a step reads one row of it), unless it is tied to the LM head."""
    total = weight_bytes_of(model)
    embed = model.get_input_embeddings().weight
    tied = embed.data_ptr() == model.get_output_embeddings().weight.data_ptr()
    return total if tied else total - embed.numel() * embed.element_size()


def weight_bytes_of(module: torch.nn.Module) -> int:
    """Bytes of a module's parameters."""
    return sum(p.numel() * p.element_size() for p in module.parameters())


def memory_bandwidth(megabytes: int = 512, repeats: int = 5) -> dict[str, float]:
    """Bytes/s of a large tensor copy (read + write counted), best of `repeats`, by wall
    clock and by this thread's CPU time (the latter ignores time lost to other processes)."""
    src = torch.ones(megabytes * 2**20 // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    best = {"wall": float("inf"), "cpu": float("inf")}
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.thread_time()
        dst.copy_(src)
        best["wall"] = min(best["wall"], time.perf_counter() - wall)
        best["cpu"] = min(best["cpu"], time.thread_time() - cpu)
    return {clock: 2 * src.numel() * 4 / seconds for clock, seconds in best.items()}


class TimedSource:
    """Wraps a source and records when each `step` starts, by wall clock and thread CPU time
    (engine overhead between steps included)."""

    def __init__(self, inner):
        self.inner, self.starts = inner, []
        self.vocab_size, self.eos_token_ids = inner.vocab_size, inner.eos_token_ids

    def reset(self) -> None:
        self.inner.reset()

    def step(self, *args, **kwargs):
        self.starts.append((time.perf_counter(), time.thread_time()))
        return self.inner.step(*args, **kwargs)


def decode_step_times(source, batch: int, args: argparse.Namespace, vocab: int) -> torch.Tensor:
    """(steps - 1, 2) seconds between consecutive decode steps, wall and CPU (prefill excluded)."""
    torch.manual_seed(0)
    input_ids = torch.randint(4, vocab, (batch, args.prompt_len))
    timed = TimedSource(source)
    cfg = GenerationConfig(max_new_tokens=args.new_tokens)
    decode_batch(
        timed, input_ids, torch.ones_like(input_ids), cfg, eos_token_ids=[], pad_token_id=0
    )
    starts = torch.tensor(timed.starts, dtype=torch.float64)
    return starts.diff(dim=0)[1:]  # the first interval is the prefill


def build_models(
    args: argparse.Namespace,
) -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module, object]:
    """(base, expert, anti-expert, lora_model): the expert is the LoRA merged into a dense copy."""
    from peft import LoraConfig, get_peft_model

    dtype = getattr(torch, args.dtype)
    if args.base and args.small:
        base = AutoModelForCausalLM.from_pretrained(args.base, dtype=dtype).eval()
        anti = AutoModelForCausalLM.from_pretrained(args.small, dtype=dtype).eval()
    else:
        base = random_llama(
            args.base_hidden, args.base_layers, args.base_intermediate, args.vocab, 0
        )
        anti = random_llama(
            args.small_hidden, args.small_layers, args.small_intermediate, args.vocab, 1
        )
        base, anti = base.to(dtype), anti.to(dtype)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    lora_cfg = LoraConfig(r=args.lora_rank, lora_alpha=2 * args.lora_rank, target_modules=targets)
    lora_model = get_peft_model(copy.deepcopy(anti), lora_cfg)
    for name, param in lora_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.01)
    lora_model.eval()
    expert = copy.deepcopy(lora_model).merge_and_unload().eval()
    return base, expert, anti, lora_model


def run(args: argparse.Namespace) -> dict:
    """Time every (mode, batch) cell and check the targets."""
    base, expert, anti, lora_model = build_models(args)
    vocab = min(output_width(m) for m in (base, anti))
    p_base = sum(p.numel() for p in base.parameters())
    p_small = sum(p.numel() for p in anti.parameters())
    p_lora = sum(p.numel() for n, p in lora_model.named_parameters() if "lora_" in n)
    bytes_base, bytes_small = weight_bytes_per_step(base), weight_bytes_per_step(anti)
    bytes_lora = p_lora * next(anti.parameters()).element_size()
    head_bytes = weight_bytes_of(anti.get_output_embeddings())
    make_proxy2 = partial(partial, ProxySource, base, expert, anti)
    make_shared = partial(partial, SharedLoraProxySource, base, lora_model)
    modes = {
        "base": (lambda: ModelSource(base), bytes_base),
        "proxy2": (make_proxy2(head_on_difference=True), bytes_base + 2 * bytes_small - head_bytes),
        "shared": (
            make_shared(head_on_difference=True, batch_rows=False),
            bytes_base + 2 * (bytes_small + bytes_lora) - head_bytes,
        ),
        "shared-2B": (
            make_shared(head_on_difference=True, batch_rows=True),
            bytes_base + bytes_small + bytes_lora,
        ),
        "proxy2-plain": (make_proxy2(head_on_difference=False), bytes_base + 2 * bytes_small),
        "shared-plain": (
            make_shared(head_on_difference=False, batch_rows=True),
            bytes_base + bytes_small + bytes_lora,
        ),
    }
    modes = {mode: spec for mode, spec in modes.items() if mode in args.modes.split(",")}
    bandwidth = memory_bandwidth()
    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        sources = {mode: make() for mode, (make, _) in modes.items()}
        for mode, source in sources.items():
            if getattr(source, "head_on_difference", False) != (
                mode in ("proxy2", "shared", "shared-2B")
            ):
                print(f"  note: {mode} runs with head_on_difference={source.head_on_difference}")
        times: dict[str, list[torch.Tensor]] = {mode: [] for mode in modes}
        for _ in range(args.repeats):  # interleave modes so background load hits all alike
            for mode, source in sources.items():
                times[mode].append(decode_step_times(source, batch, args, vocab))
        for mode, (_, step_bytes) in modes.items():
            wall, cpu = torch.cat(times[mode]).median(dim=0).values.tolist()
            row = {"mode": mode, "batch": batch, "weight_mb_per_step": step_bytes / 2**20}
            for clock, seconds in (("wall", wall), ("cpu", cpu)):
                roofline = step_bytes / bandwidth[clock]
                row[clock] = {
                    "ms_per_step": 1e3 * seconds,
                    "tokens_per_s": batch / seconds,
                    "roofline_ms": 1e3 * roofline,
                    "roofline_fraction": roofline / seconds,
                }
            rows.append(row)
            print(
                f"  {mode:7s} batch {batch}: {1e3 * wall:7.1f} ms/step wall, {1e3 * cpu:7.1f} cpu",
                flush=True,
            )
    return {
        "params": {"base": p_base, "small": p_small, "lora": p_lora},
        "bandwidth_gb_s": {clock: value / 1e9 for clock, value in bandwidth.items()},
        "rows": rows,
        "targets": {
            clock: check_targets(rows, p_small / p_base, clock) for clock in ("wall", "cpu")
        },
        "settings": {k: str(v) for k, v in vars(args).items()},
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
        },
    }


def check_targets(rows: list[dict], small_ratio: float, clock: str) -> list[dict]:
    """Per batch: proxy2 / base vs its bound, and shared small side / proxy2 small side vs 0.6."""
    ms = {(r["mode"], r["batch"]): r[clock]["ms_per_step"] for r in rows}
    checks = []
    for batch in sorted({r["batch"] for r in rows}):
        base = ms[("base", batch)]
        bound = 1.15 * (1 + 2 * small_ratio)
        shared_mode = min(
            (m for m in ("shared", "shared-2B") if (m, batch) in ms), key=lambda m: ms[(m, batch)]
        )
        side_two, side_shared = ms[("proxy2", batch)] - base, ms[(shared_mode, batch)] - base
        checks.append(
            {
                "batch": batch,
                "proxy2_over_base": ms[("proxy2", batch)] / base,
                "proxy2_bound": bound,
                "proxy2_met": ms[("proxy2", batch)] / base <= bound,
                "shared_mode": shared_mode,  # the faster shared layout
                "shared_side_over_two_side": side_shared / side_two,
                "shared_met": side_shared / side_two <= 0.6,
            }
        )
        if ("proxy2-plain", batch) in ms:  # the two-model side without the shared-head step
            side_plain = ms[("proxy2-plain", batch)] - base
            checks[-1]["shared_side_over_plain_two_side"] = side_shared / side_plain
            checks[-1]["proxy2_plain_over_base"] = ms[("proxy2-plain", batch)] / base
    return checks


def print_table(result: dict) -> None:
    """Markdown tables: every cell by wall clock and CPU time, then the target checks."""
    params, bw = result["params"], result["bandwidth_gb_s"]
    print(
        f"\nparams: base {params['base'] / 1e6:.1f}M, small {params['small'] / 1e6:.1f}M, "
        f"lora {params['lora'] / 1e6:.2f}M; copy bandwidth {bw['wall']:.1f} GB/s wall, "
        f"{bw['cpu']:.1f} GB/s cpu"
    )
    print(
        "| mode | batch | weights MB/step | ms/step wall | tok/s wall | of roofline wall "
        "| ms/step cpu | tok/s cpu | of roofline cpu |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in result["rows"]:
        cells = [f"{r['mode']}", f"{r['batch']}", f"{r['weight_mb_per_step']:.0f}"]
        for clock in ("wall", "cpu"):
            c = r[clock]
            cells += [
                f"{c['ms_per_step']:.1f}",
                f"{c['tokens_per_s']:.1f}",
                f"{c['roofline_fraction']:.0%}",
            ]
        print("| " + " | ".join(cells) + " |")
    print(
        "\n| clock | batch | proxy2/base | bound | met | best shared side / two-model side | met (<= 0.6) "
        "| proxy2-plain/base | shared side / plain two-model side |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for clock, checks in result["targets"].items():
        for c in checks:
            plain = [c.get("proxy2_plain_over_base"), c.get("shared_side_over_plain_two_side")]
            print(
                f"| {clock} | {c['batch']} | {c['proxy2_over_base']:.2f} | {c['proxy2_bound']:.2f} | "
                f"{'yes' if c['proxy2_met'] else 'no'} | {c['shared_side_over_two_side']:.2f} "
                f"({c['shared_mode']}) | "
                f"{'yes' if c['shared_met'] else 'no'} | "
                + " | ".join("-" if v is None else f"{v:.2f}" for v in plain)
                + " |"
            )


def main() -> None:
    """Run, print, write JSON (temp file, then rename)."""
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(args)
    print_table(result)
    atomic_write_text(args.out, json.dumps(result, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
