"""Train the tiny Llama (LoRA or every weight) on a generation task and write the loss curve; run
alone or under `accelerate launch` (DDP, FSDP, DeepSpeed, per the accelerate config).

usage: python tests/lm_train.py MODEL_DIR TRAIN_JSONL OUT_JSON SETUPS [key=value ...]

SETUPS: lora, full or both (lora,full: one launch trains both in turn). The key=values are
TrainConfig settings (e.g. packing=true loss_chunk=4 precision=bf16). OUT_JSON gets, per setup,
the losses, the number of processes, accelerate's distributed type and whether the prepared
model's weights were sharded (FSDP), so a test can tell FSDP from a silent DDP.
"""

import json
import sys
from pathlib import Path

import torch
from accelerate.state import AcceleratorState
from peft import LoraConfig, get_peft_model

from lmadapt.config import build_configs, parse_overrides
from lmadapt.data import DataSpec, load_task
from lmadapt.models.load import ModelSpec
from lmadapt.models.task_model import build_task_model
from lmadapt.train.config import TrainConfig
from lmadapt.train.loop import train


def sharded(model: torch.nn.Module) -> bool:
    """Whether FSDP manages the model: FSDP2's DTensor weights or FSDP1's wrapper modules."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters()) or any(
        type(m).__name__ == "FullyShardedDataParallel" for m in model.modules())


def run(model_dir: str, data: str, setup: str, extra: list[str]) -> dict:
    base = {"epochs": 1, "batch_size": 8, "grad_accum": 2, "lr": 1e-3 if setup == "lora" else 1e-4,
            "warmup_ratio": 0.0, "eval_each_epoch": False, "max_length": 32}
    cfg = build_configs([TrainConfig], {**base, **parse_overrides(extra)})[TrainConfig]
    task = load_task(data, DataSpec())
    torch.manual_seed(0)
    tm = build_task_model(ModelSpec(model=model_dir, device="cpu"), task, cfg.max_length)
    if setup == "lora":
        tm.model = get_peft_model(tm.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    seen: list[bool] = []
    original = tm.loss

    def watched(model, batch):  # records, on the first step, whether the model in training is sharded
        if not seen:
            seen.append(sharded(model))
        return original(model, batch)

    tm.loss = watched
    result = train(tm, task.examples, cfg)
    state = AcceleratorState()
    return {"losses": result.losses, "processes": state.num_processes, "sharded": seen[0],
            "gathered": bool(tm._head_verdict and tm._head_verdict[1]),
            "distributed_type": str(state.distributed_type).split(".")[-1], "tokens": result.tokens}


def main() -> None:
    model_dir, data, out, setups, *extra = sys.argv[1:]
    results = {setup: run(model_dir, data, setup, extra) for setup in setups.split(",")}
    if AcceleratorState().is_main_process:
        Path(out).write_text(json.dumps(results))


if __name__ == "__main__":
    main()
