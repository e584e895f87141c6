"""Train the tiny BERT classifier and write the loss curve; run alone or under accelerate launch.

usage: python tests/ddp_train.py MODEL_DIR TRAIN_JSONL OUT_JSON
"""

import json
import sys
from pathlib import Path

from accelerate import PartialState

from lmadapt.data import DataSpec, load_task
from lmadapt.methods.base import RunContext, task_model_for
from lmadapt.models.load import ModelSpec
from lmadapt.train.config import TrainConfig
from lmadapt.train.loop import train


def main() -> None:
    model_dir, data, out = sys.argv[1:4]
    task = load_task(data, DataSpec())
    cfg = TrainConfig(epochs=1, batch_size=8, grad_accum=2, lr=1e-3, warmup_ratio=0.0, eval_each_epoch=False)
    tm = task_model_for(task, RunContext(ModelSpec(model=model_dir, device="cpu"), cfg, Path(out).parent))
    result = train(tm, task.examples, cfg)
    state = PartialState()
    if state.is_main_process:
        Path(out).write_text(json.dumps({"losses": result.losses, "processes": state.num_processes}))


if __name__ == "__main__":
    main()
