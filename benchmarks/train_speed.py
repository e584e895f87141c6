"""Training speed and memory: lmadapt's training loop against TRL `SFTTrainer` + peft, the code a
user would otherwise write, on the same rows with the same settings.

    python benchmarks/train_speed.py --packing --out docs/train_speed.json      # issue 15's measurement
    python benchmarks/train_speed.py --quick --out /tmp/train_speed.json         # 2 steps of batch 2, 1 thread

Both sides train SmolLM2-135M (`--model`) one epoch over the same `steps x batch` rows (a seeded
subset), prompt -> completion with the loss on the completion only, at the same batch, learning
rate, schedule (linear, 6% warmup), seed, precision, max length and thread count, with no eval
and no checkpoints. Setups: LoRA (r 16, alpha 32, dropout 0, on q_proj and v_proj) and full
fine-tuning. Data (`lmadapt pull data ...`):
- rotten-tomatoes: review -> label word (lmadapt: a classification task with the demo's template,
  the loss on the label token; TRL: prompt = the templated review, completion = " fresh"/" rotten");
- gsm-symbolic: chat `messages`, the worked answer as the completion (lmadapt: the chat path, the
  loss on the assistant turn; TRL: conversational prompt/completion), both with the model's chat
  template.

lmadapt runs as `lmadapt tune` does (`lmadapt.run.tune`, eval on one row with one new token);
TRL as its docs show (`SFTTrainer(model, args=SFTConfig(completion_only_loss=True, ...),
peft_config=LoraConfig(...))`), with the two SFTConfig defaults that differ from lmadapt's set to
lmadapt's: `gradient_checkpointing=False` and bf16 only with `--precision bf16`. Everything else
is TRL's default (its optimizer is `adamw_torch_fused`, lmadapt's `torch.optim.AdamW`).

Each run is a fresh subprocess (its peak RSS is its own, read with `os.wait4`; on a GPU the
child reports `torch.cuda.max_memory_allocated`), and the repeats interleave: lmadapt, TRL,
lmadapt, TRL, ... per cell. Timed: the training loop only, model loading excluded — lmadapt's
`TrainResult.seconds` (first batch to last optimizer step; it tokenises each batch inside the
loop) and, for TRL, a callback from `on_train_begin` to `on_train_end` (its rows were tokenised in
`SFTTrainer(...)`, before). Tokens/s for both = the rows' non-pad tokens (prompt + target, as
lmadapt tokenises them, counted once up front) / the timed seconds; each tool's own count is kept
in the JSON beside it. `--packing` adds both tools packed: TRL with `packing=True` (best-fit
decreasing, padding-free), lmadapt with `packing=true` (each batch's rows packed into rows of
`max_length`, positions restarting per example); `--packed-tools lmadapt` runs only lmadapt packed
(TRL's packed runs are slow on CPU) and the table adds lmadapt packed / TRL unpacked. `--loss-chunk N` gives lmadapt `loss_chunk=N`
(its LM head and cross-entropy on N target tokens at a time; TRL has no such setting).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPEED_TARGET = 2.0  # issue 15: lmadapt tokens/s >= 2x TRL + peft on both data sets (CPU, LoRA r16 q/v)
MEMORY_TARGET = 0.6  # issue 15: lmadapt peak memory <= 0.6x TRL's on the long-target data
LONG_TARGETS = "gsm-symbolic"
WARMUP = 0.06  # lmadapt's default warmup_ratio, given to TRL as warmup steps
DATASETS = ("rotten-tomatoes", "gsm-symbolic")
SYNTHETIC = "synthetic"  # rows of a chosen length, no pull needed (the GPU script's data)
RANDOM_MODELS = {  # `--model random:NAME`: a randomly initialised Llama with `--tokenizer`'s vocabulary
    "llama-1.1b": {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22,
                   "num_attention_heads": 32, "num_key_value_heads": 4},
    "llama-tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                   "num_attention_heads": 4, "num_key_value_heads": 2},
}
WORDS = ("the", "model", "data", "time", "value", "number", "result", "first", "second", "large", "small",
         "train", "test", "answer", "question", "people", "water", "city", "house", "money", "work", "day",
         "year", "school", "book", "story", "world", "market", "price", "total", "each", "more", "less",
         "half", "three", "four", "five", "seven", "ten", "hundred", "apple", "orange", "river", "garden")
SETUPS = {"lora": 1e-3, "full": 5e-5}  # setup -> default lr (lmadapt's lora / full defaults)
LORA = {"r": 16, "alpha": 32, "dropout": 0.0, "targets": ["q_proj", "v_proj"]}
SIZES = {"full": {"steps": 20, "batch": 8, "repeats": 3, "threads": 0},
         "quick": {"steps": 2, "batch": 2, "repeats": 1, "threads": 1}}
TOOLS = ("lmadapt", "trl")


# ---- data: the same rows for both tools, counted once -------------------------------------------
def prepare_data(dataset: str, n_rows: int, seed: int, model_ref: str, max_length: int, work: Path,
                 synthetic_tokens: int = 1024) -> dict:
    """A seeded subset of `n_rows` rows written twice — as the user's file for `lmadapt tune` and as
    TRL prompt/completion rows — with its non-pad token count as lmadapt tokenises it."""
    from lmadapt.assets import pull_data
    from lmadapt.data.loaders import DataSpec, load_task
    from lmadapt.demo import TEMPLATE
    from lmadapt.models.chat import chat_template_for
    from lmadapt.models.load import load_tokenizer
    from lmadapt.models.task_model import TaskModel

    template = TEMPLATE if dataset == "rotten-tomatoes" else ""
    if dataset == SYNTHETIC:
        source = work / "data" / "synthetic.source.jsonl"
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_text("".join(json.dumps(r) + "\n" for r in synthetic_rows(n_rows, synthetic_tokens, seed)))
    else:
        source = pull_data(dataset)
    full = load_task(source, DataSpec(template=template), name=dataset)
    if len(full.examples) < n_rows:
        raise SystemExit(f"{dataset} has {len(full.examples)} rows; steps x batch = {n_rows}")
    task = full.subsample(n_rows, seed)
    own, trl = [], []
    for ex in task.examples:
        if task.chat:
            messages = ex.as_dicts()
            own.append({"messages": messages})
            trl.append({"prompt": messages[:-1], "completion": messages[-1:]})
        else:
            own.append({"text": ex.text, "label": ex.target})
            trl.append({"prompt": task.prompt(ex.text), "completion": task.label_prefix + ex.target})
    files = {"lmadapt": work / "data" / f"{dataset}.jsonl", "trl": work / "data" / f"{dataset}.trl.jsonl"}
    files["lmadapt"].parent.mkdir(parents=True, exist_ok=True)
    for name, rows in (("lmadapt", own), ("trl", trl)):
        files[name].write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    # lmadapt's own batching of each row alone (no padding), without a length limit, then cut
    tokenizer = load_tokenizer(model_ref, "causal")
    counter = TaskModel(model=None, tokenizer=tokenizer, task=task, kind="causal", ref=model_ref,
                        max_length=10**9, chat_template=chat_template_for(tokenizer, task, model_ref))
    lengths, targets = [], []
    for ex in task.examples:
        batch = counter.collate([ex])
        lengths.append(int(batch["attention_mask"].sum()))
        targets.append(int((batch["labels"] != -100).sum()))
    return {"dataset": dataset, "rows": n_rows, "template": template, "labels": list(full.labels),
            "files": {k: str(v) for k, v in files.items()},
            "tokens": sum(min(n, max_length) for n in lengths), "target_tokens": sum(targets),
            "mean_tokens": round(statistics.mean(lengths), 1), "max_tokens": max(lengths),
            "truncated_rows": sum(n > max_length for n in lengths)}


def synthetic_rows(n_rows: int, tokens: int, seed: int) -> list[dict]:
    """Chat rows of about `tokens` tokens each (about one per word), half question, half answer,
    of seeded common words: the GPU measurement's B x T rows, with no data set to pull."""
    import random

    rng = random.Random(seed)
    half = max(1, (tokens - 32) // 2)  # leave room for the chat template's markers

    def words() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(half))

    return [{"messages": [{"role": "user", "content": words()}, {"role": "assistant", "content": words()}]}
            for _ in range(n_rows)]


def random_model(name: str, tokenizer_ref: str, seed: int, folder: Path) -> Path:
    """A randomly initialised Llama of RANDOM_MODELS[name] with the tokenizer's vocabulary, saved
    with that tokenizer in `folder` (both tools load it from there)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from lmadapt.models.load import resolve_model_ref

    if name not in RANDOM_MODELS:
        raise SystemExit(f"unknown random model {name!r}; use random:{' or random:'.join(RANDOM_MODELS)}")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_ref(tokenizer_ref))
    config = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=4096, tie_word_embeddings=False,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, **RANDOM_MODELS[name])
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# ---- the two children: one training run each, in its own process ------------------------------
def child_lmadapt(job: dict) -> dict:
    """`lmadapt tune` of one setup, as the CLI runs it; eval on one row, one new token."""
    from lmadapt.data.loaders import DataSpec, load_task
    from lmadapt.methods.full import FullConfig
    from lmadapt.methods.lora import LoraMethodConfig
    from lmadapt.models.load import ModelSpec
    from lmadapt.run import tune
    from lmadapt.train.config import TrainConfig

    spec = DataSpec(template=job["template"], labels=tuple(job["labels"]))
    task = load_task(job["files"]["lmadapt"], spec, name=job["dataset"])
    eval_task = task.with_examples(task.examples[:1], "-eval")
    cfg = TrainConfig(epochs=1, lr=job["lr"], batch_size=job["batch"], max_length=job["max_length"],
                      precision=job["precision"], seed=job["seed"], warmup_ratio=WARMUP,
                      eval_each_epoch=False, val_split=0, max_new_tokens=1, eval_batch_size=1,
                      packing=job["packing"], loss_chunk=job.get("loss_chunk", 0))
    if job["setup"] == "lora":
        method_cfg = LoraMethodConfig(lora_r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                                      lora_target_modules=tuple(LORA["targets"]))
    else:
        method_cfg = FullConfig()
    run_dir = Path(job["work"]) / "run"
    record = tune(job["setup"], ModelSpec(job["model"]), task, eval_task, method_cfg, cfg, run_dir)
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    losses = [row["loss"] for row in log if "loss" in row]
    shutil.rmtree(run_dir)  # full fine-tuning saved the whole model: not kept per run
    return {"train_seconds": record.train_seconds, "steps": record.train_steps,
            "own_tokens": round(record.train_tokens_per_second * record.train_seconds),
            "mean_loss": statistics.mean(losses)}


def child_trl(job: dict) -> dict:
    """TRL SFTTrainer (+ peft LoRA) on the prompt/completion rows, as TRL's docs show it."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    class LoopTimer(TrainerCallback):
        """Seconds from the Trainer's on_train_begin to its on_train_end."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.began = time.perf_counter()

        def on_train_end(self, args, state, control, **kwargs):
            self.seconds = time.perf_counter() - self.began

    rows = [json.loads(line) for line in Path(job["files"]["trl"]).read_text().splitlines()]
    tokenizer = AutoTokenizer.from_pretrained(job["model_path"])
    model = AutoModelForCausalLM.from_pretrained(job["model_path"], dtype=torch.float32)
    peft_config = None
    if job["setup"] == "lora":
        peft_config = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                                 target_modules=LORA["targets"], bias="none", task_type="CAUSAL_LM")
    args = SFTConfig(
        output_dir=str(Path(job["work"]) / "trl"), per_device_train_batch_size=job["batch"],
        gradient_accumulation_steps=1, num_train_epochs=1, learning_rate=job["lr"], lr_scheduler_type="linear",
        warmup_steps=int(WARMUP * job["steps"]), weight_decay=0.0, max_grad_norm=1.0, seed=job["seed"],
        bf16=job["precision"] == "bf16", fp16=False, gradient_checkpointing=False,
        max_length=job["max_length"], packing=job["packing"], completion_only_loss=True,
        eval_strategy="no", save_strategy="no", report_to="none")
    timer = LoopTimer()
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=tokenizer, peft_config=peft_config, callbacks=[timer])
    output = trainer.train()
    return {"train_seconds": timer.seconds, "steps": trainer.state.global_step,
            "own_tokens": getattr(trainer, "_total_train_tokens", None), "mean_loss": output.training_loss}


def child_main(job_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    began = time.perf_counter()
    import torch

    torch.set_num_threads(job["threads"])
    result = (child_lmadapt if job["tool"] == "lmadapt" else child_trl)(job)
    result["peak_cuda_bytes"] = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    # torch/tool imports, model load, data preparation, training (+ lmadapt's one-row eval, run folder)
    result["child_seconds"] = time.perf_counter() - began
    Path(job["result"]).write_text(json.dumps(result))


def run_child(job: dict, work: Path) -> dict:
    """One run in a fresh process; its peak RSS from the kernel (wait4), its figures from its file."""
    work.mkdir(parents=True, exist_ok=True)
    job = {**job, "work": str(work), "result": str(work / "result.json")}
    (work / "job.json").write_text(json.dumps(job))
    threads = str(job["threads"])
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "TOKENIZERS_PARALLELISM": "false"}
    log = work / "log.txt"
    began = time.perf_counter()
    with log.open("w") as handle:
        proc = subprocess.Popen([sys.executable, __file__, "--child", str(work / "job.json")],
                                stdout=handle, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - began
    code = os.waitstatus_to_exitcode(status)
    row = {"process_seconds": round(wall, 2), "peak_rss_bytes": usage.ru_maxrss * 1024, "returncode": code}
    if code != 0 or not Path(job["result"]).is_file():
        tail = log.read_text(errors="replace").strip().splitlines()[-1:]
        print(f"  exit {code}: {tail[0][:200] if tail else ''} (log: {log})", file=sys.stderr)
        return {**row, "status": "failed", "error": tail[0][:300] if tail else f"exit {code}"}
    return {**row, "status": "ok", **json.loads(Path(job["result"]).read_text())}


# ---- the measurement -----------------------------------------------------------------------------
Cell = tuple[str, str, bool]  # (dataset, setup, packing)


def cells(datasets: list[str], setups: list[str], packing: bool) -> list[Cell]:
    return [(d, s, p) for d in datasets for s in setups for p in ((False, True) if packing else (False,))]


def one_run(args: argparse.Namespace, cell: Cell, tool: str, info: dict, model_path: str, work: Path) -> dict:
    """One tool's training run on one cell, with tokens/s from the rows' shared token count."""
    dataset, setup, packing = cell
    model = model_path if args.model.startswith("random:") else args.model
    job = {"tool": tool, "dataset": dataset, "setup": setup, "packing": packing, "model": model,
           "model_path": model_path, "files": info["files"], "template": info["template"],
           "labels": info["labels"], "steps": args.steps, "batch": args.batch, "lr": args.lr or SETUPS[setup],
           "max_length": args.max_length, "precision": args.precision, "seed": args.seed,
           "threads": args.threads, "loss_chunk": args.loss_chunk}
    row = run_child(job, work)
    if row["status"] == "ok":
        seconds = row["train_seconds"]
        row.update(tokens=info["tokens"], tokens_per_second=round(info["tokens"] / seconds, 1),
                   step_seconds=round(seconds / max(1, row["steps"]), 4),
                   peak_memory_bytes=row["peak_cuda_bytes"] or row["peak_rss_bytes"])
    return row


def measure(args: argparse.Namespace, data: dict[str, dict], model_path: str, work: Path) -> list[dict]:
    """Every cell's repeats, interleaved: lmadapt, TRL, lmadapt, TRL, ..."""
    runs = []
    for cell in cells(args.datasets, args.setups, args.packing):
        dataset, setup, packing = cell
        for repeat in range(args.repeats):
            for tool in TOOLS:
                if packing and tool not in args.packed_tools:
                    continue
                key = {"dataset": dataset, "setup": setup, "packing": packing, "tool": tool, "repeat": repeat}
                name = f"{dataset}-{setup}-{'packed' if packing else 'padded'}-{tool}-{repeat}"
                row = one_run(args, cell, tool, data[dataset], model_path, work / "runs" / name)
                runs.append({**key, **row})
                shown = row["status"] if row["status"] != "ok" else (
                    f"{row['tokens_per_second']:.0f} tok/s, {row['step_seconds']:.2f} s/step, "
                    f"peak {row['peak_memory_bytes'] / 2**20:.0f} MiB")
                print(f"  {name}: {shown}", file=sys.stderr)
    return runs


FIGURES = ("tokens_per_second", "step_seconds", "peak_memory_bytes")


def summarise(runs: list[dict]) -> list[dict]:
    """Per cell: each tool's medians over its repeats, and lmadapt / TRL."""
    out = []
    for cell in dict.fromkeys((r["dataset"], r["setup"], r["packing"]) for r in runs):
        row: dict = dict(zip(("dataset", "setup", "packing"), cell, strict=True))
        for tool in TOOLS:
            mine = [r for r in runs if (r["dataset"], r["setup"], r["packing"]) == cell and r["tool"] == tool]
            ok = [r for r in mine if r["status"] == "ok"]
            if ok:
                row[tool] = {"status": "ok", "runs": len(ok),
                             **{k: statistics.median(r[k] for r in ok) for k in FIGURES}}
            else:
                row[tool] = {"status": mine[0]["status"] if mine else "not run"}
        ours, theirs = row["lmadapt"], row["trl"]
        if ours["status"] == "ok" and theirs["status"] == "ok":
            row["speed_ratio"] = round(ours["tokens_per_second"] / theirs["tokens_per_second"], 3)
            row["memory_ratio"] = round(ours["peak_memory_bytes"] / theirs["peak_memory_bytes"], 3)
        out.append(row)
    return out


def cross_packing(summary: list[dict]) -> list[dict]:
    """Per data set and setup with both measured: lmadapt packed against TRL unpacked, each
    tool's faster mode on CPU (TRL's own packing ran slower than its unpacked runs here)."""
    rows = []
    for row in summary:
        if not row["packing"] or row["lmadapt"]["status"] != "ok":
            continue
        padded = next((r for r in summary if (r["dataset"], r["setup"], r["packing"]) ==
                       (row["dataset"], row["setup"], False)), None)
        if padded is None or padded["trl"]["status"] != "ok":
            continue
        ours, theirs = row["lmadapt"], padded["trl"]
        rows.append({"dataset": row["dataset"], "setup": row["setup"],
                     "speed_ratio": round(ours["tokens_per_second"] / theirs["tokens_per_second"], 3),
                     "memory_ratio": round(ours["peak_memory_bytes"] / theirs["peak_memory_bytes"], 3)})
    return rows


def _figure(summary_row: dict, tool: str, key: str) -> str:
    cell = summary_row[tool]
    if cell["status"] != "ok":
        return cell["status"].split(":")[0]
    if key == "peak_memory_bytes":
        return f"{cell[key] / 2**20:.0f}"  # MiB
    return f"{cell[key]:.3f}" if key == "step_seconds" else f"{cell[key]:.0f}"


def table(result: dict) -> str:
    s = result["settings"]
    memory = "peak allocated" if result["device"].startswith("cuda") else "peak RSS"
    lines = [f"{s['model']}, {s['steps']} steps x batch {s['batch']}, {s['precision']}, max_length "
             f"{s['max_length']}, {s['threads']} threads, {s['repeats']} repeats (medians), "
             f"{result['device']}", "",
             f"| data | setup | packing | lmadapt tok/s | TRL tok/s | speed lmadapt/TRL | lmadapt s/step "
             f"| TRL s/step | lmadapt {memory} (MiB) | TRL {memory} (MiB) | memory lmadapt/TRL |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in result["summary"]:
        speed = f"{row['speed_ratio']:.2f}" if "speed_ratio" in row else "—"
        mem = f"{row['memory_ratio']:.2f}" if "memory_ratio" in row else "—"
        cols = [row["dataset"], row["setup"], "yes" if row["packing"] else "no",
                *[_figure(row, tool, "tokens_per_second") for tool in TOOLS], speed,
                *[_figure(row, tool, "step_seconds") for tool in TOOLS],
                *[_figure(row, tool, "peak_memory_bytes") for tool in TOOLS], mem]
        lines.append("| " + " | ".join(cols) + " |")
    for row in result.get("packed_vs_unpacked", []):
        lines.append(f"lmadapt packed / TRL unpacked, {row['dataset']} {row['setup']}: speed "
                     f"{row['speed_ratio']:.2f}x, memory {row['memory_ratio']:.2f}x")
    lines += ["", f"targets (issue 15; CPU, SmolLM2-135M, LoRA r16 q/v): speed ≥ {SPEED_TARGET}× on both "
              f"data sets, memory ≤ {MEMORY_TARGET}× on {LONG_TARGETS}"]
    failed = [r for r in result["runs"] if r["status"] == "failed"]
    if failed:
        lines.append(f"failed: {len(failed)} runs (logs in {result['work']}/runs)")
    return "\n".join(lines)


def versions() -> dict[str, str]:
    from importlib.metadata import version

    names = ("lmadapt", "torch", "transformers", "peft", "trl", "accelerate", "datasets")
    return {name: version(name) for name in names}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="pull name, hub id, path, or random:" +
                        " | random:".join(RANDOM_MODELS) + " (a random Llama with --tokenizer's vocabulary)")
    parser.add_argument("--tokenizer", default="smollm2-135m", help="with --model random:NAME: its tokenizer")
    parser.add_argument("--datasets", default=",".join(DATASETS),
                        help="comma-separated, of " + ", ".join((*DATASETS, SYNTHETIC)))
    parser.add_argument("--synthetic-tokens", type=int, default=1024,
                        help="with the synthetic data set: tokens per row, about (half prompt, half answer)")
    parser.add_argument("--setups", default=",".join(SETUPS), help="comma-separated, of " + ", ".join(SETUPS))
    parser.add_argument("--steps", type=int, help="optimizer steps (rows = steps x batch, one epoch; default 20)")
    parser.add_argument("--batch", type=int, help="batch size (default 8)")
    parser.add_argument("--threads", type=int, help="torch threads in each run (default 0: every core)")
    parser.add_argument("--repeats", type=int, help="runs per tool and cell, interleaved (default 3)")
    parser.add_argument("--lr", type=float, default=0.0, help="learning rate (default: lora 1e-3, full 5e-5)")
    parser.add_argument("--max-length", type=int, default=512, help="longest row in tokens, both tools")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--packing", action="store_true",
                        help="also both tools packed (TRL packing=True, lmadapt packing=true)")
    parser.add_argument("--packed-tools", default=",".join(TOOLS),
                        help="with --packing: the tools to run packed (e.g. lmadapt: TRL's packed runs are slow on CPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--loss-chunk", type=int, default=0, help="lmadapt's loss_chunk (0 = all target tokens at once)")
    parser.add_argument("--quick", action="store_true", help="2 steps of batch 2, 1 repeat, 1 thread")
    parser.add_argument("--work", default="", help="folder for data, runs and logs (default: a temporary one)")
    parser.add_argument("--out", default="train_speed.json", help="write the results as JSON here")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)  # internal: one run
    args = parser.parse_args()
    for key, value in SIZES["quick" if args.quick else "full"].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.threads = args.threads or os.cpu_count() or 1
    args.datasets, args.setups = args.datasets.split(","), args.setups.split(",")
    args.packed_tools = args.packed_tools.split(",")
    for name, known in (("datasets", (*DATASETS, SYNTHETIC)), ("setups", SETUPS), ("packed_tools", TOOLS)):
        if unknown := [v for v in getattr(args, name) if v not in known]:
            parser.error(f"unknown {name}: {', '.join(unknown)}; use {', '.join(known)}")
    return args


def main() -> None:
    args = parse_args()
    if args.child:
        child_main(args.child)
        return
    import torch

    from lmadapt.models.load import resolve_model_ref

    work = Path(args.work or tempfile.mkdtemp(prefix="train-speed-"))
    if args.model.startswith("random:"):
        model_path = str(random_model(args.model.split(":", 1)[1], args.tokenizer, args.seed, work / "random-model"))
    else:
        model_path = resolve_model_ref(args.model)  # a pull name is pulled on first use
    data = {d: prepare_data(d, args.steps * args.batch, args.seed, model_path, args.max_length, work,
                            args.synthetic_tokens) for d in args.datasets}
    for path in Path(model_path).rglob("*"):  # every run finds the model in the OS file cache
        if path.is_file():
            path.read_bytes()
    print(f"train speed: {len(cells(args.datasets, args.setups, args.packing))} cells x {args.repeats} repeats",
          file=sys.stderr)
    runs = measure(args, data, model_path, work)
    device = f"cuda:{torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else f"cpu x{os.cpu_count()}"
    settings = {k: getattr(args, k) for k in ("model", "tokenizer", "synthetic_tokens", "steps", "batch", "threads",
                                              "repeats", "max_length",
                                              "precision", "seed", "packing", "packed_tools", "loss_chunk")}
    settings.update(lr={s: args.lr or SETUPS[s] for s in args.setups}, lora=LORA, warmup_ratio=WARMUP)
    result = {"settings": settings, "device": device, "versions": versions(),
              "timed": "lmadapt: TrainResult.seconds (its loop, tokenising each batch); TRL: on_train_begin to "
                       "on_train_end (rows tokenised before, in SFTTrainer())",
              "data": {d: {k: v for k, v in info.items() if k != "files"} for d, info in data.items()},
              "targets": {"speed_ratio_min": SPEED_TARGET, "memory_ratio_max": MEMORY_TARGET,
                          "memory_on": LONG_TARGETS},
              "summary": summarise(runs), "runs": runs, "work": str(work)}
    result["packed_vs_unpacked"] = cross_packing(result["summary"])
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(table(result))
    if not args.work and all(r["status"] != "failed" for r in runs):
        shutil.rmtree(work, ignore_errors=True)  # a failure keeps its logs


if __name__ == "__main__":
    main()
