"""Scale-out, verified: the same loss curve from several processes as from one (issue 15, part 5).

- FSDP (examples/accelerate/fsdp_cpu.yaml: FSDP2 over gloo): LoRA and full fine-tuning of the
  tiny Llama on 2 CPU processes, with packing and the chunked gathered loss, equal one process's
  curve; the run must really be sharded (accelerate alone would run DDP on CPU).
- DeepSpeed ZeRO-2/3 (examples/deepspeed/*.json): opt in with `-m gpu` on a machine with CUDA and
  deepspeed installed; the same comparison on one GPU process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from lmadapt.errors import LmadaptError
from lmadapt.train.config import TrainConfig
from tiny import toy_rows, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).with_name("lm_train.py")
LAUNCHER = Path(sys.executable).with_name("accelerate")
needs_launcher = pytest.mark.skipif(shutil.which("accelerate") is None and not LAUNCHER.exists(),
                                    reason="accelerate CLI not installed")


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}


def _curves(tiny_llama: Path, tmp_path: Path, launch: list[str], settings: list[str]) -> tuple[dict, dict]:
    """(one process's results, the launched run's results), per setup (lora, full)."""
    data = write_jsonl(tmp_path / "train.jsonl", toy_rows(32, seed=3, kind="generation"))
    args = [str(tiny_llama), str(data)]
    single = subprocess.run([sys.executable, str(SCRIPT), *args, str(tmp_path / "one.json"), "lora,full", *settings],
                            env=_env(), capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    launched = subprocess.run([str(LAUNCHER), "launch", *launch, str(SCRIPT), *args, str(tmp_path / "two.json"),
                               "lora,full", *settings], env=_env(), capture_output=True, text=True, timeout=600)
    assert launched.returncode == 0, launched.stderr[-4000:]
    return json.loads((tmp_path / "one.json").read_text()), json.loads((tmp_path / "two.json").read_text())


@needs_launcher
def test_fsdp_on_two_cpu_processes_matches_one(tiny_llama, tmp_path):
    config = ROOT / "examples" / "accelerate" / "fsdp_cpu.yaml"
    one, two = _curves(tiny_llama, tmp_path, ["--config_file", str(config), "--num_processes", "2"],
                       ["packing=true", "loss_chunk=1"])
    for setup in ("lora", "full"):
        assert two[setup]["processes"] == 2 and two[setup]["distributed_type"] == "FSDP", two[setup]
        assert two[setup]["sharded"] and two[setup]["gathered"] and one[setup]["gathered"]
        assert two[setup]["losses"] == pytest.approx(one[setup]["losses"], abs=1e-4), setup
        assert two[setup]["tokens"] == one[setup]["tokens"]


def test_fsdp_on_cpu_needs_version_2(monkeypatch):
    """accelerate hands FSDP1 the device cpu:0, which torch's FSDP1 refuses: one line instead."""
    from lmadapt.train.loop import _fsdp_on_cpu

    for key, value in {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "1", "FSDP_SYNC_MODULE_STATES": "false",
                       "FSDP_CPU_RAM_EFFICIENT_LOADING": "false"}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(LmadaptError, match="needs fsdp_version: 2"):
        _fsdp_on_cpu(SimpleNamespace(state=SimpleNamespace()))


@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_deepspeed_configs_take_the_train_settings(stage):
    """The shipped ZeRO configs leave batch, accumulation and clipping "auto"; the loop fills them
    from the train settings (no dataloader tells accelerate)."""
    from accelerate.utils import DeepSpeedPlugin

    from lmadapt.train.loop import deepspeed_settings

    plugin = DeepSpeedPlugin(hf_ds_config=str(ROOT / "examples" / "deepspeed" / f"{stage}.json"))
    accelerator = SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=plugin), gradient_accumulation_steps=1)
    deepspeed_settings(accelerator, TrainConfig(batch_size=16, grad_accum=2, max_grad_norm=0.5), per_proc=4)
    values = {k: plugin.deepspeed_config[k] for k in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                                                      "train_batch_size", "gradient_clipping")}
    assert values == {"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 2,
                      "train_batch_size": 16, "gradient_clipping": 0.5}
    assert accelerator.gradient_accumulation_steps == 2 and plugin.zero_stage == int(stage[-1])


@pytest.mark.gpu
@needs_launcher
@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_deepspeed_zero_matches_plain(tiny_llama, tmp_path, stage):
    pytest.importorskip("deepspeed")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    config = ROOT / "examples" / "deepspeed" / f"{stage}.json"
    one, ds = _curves(tiny_llama, tmp_path, ["--use_deepspeed", "--deepspeed_config_file", str(config),
                                             "--num_processes", "1", "--num_machines", "1",
                                             "--mixed_precision", "no", "--dynamo_backend", "no"], [])
    for setup in ("lora", "full"):
        assert ds[setup]["distributed_type"] == "DEEPSPEED", ds[setup]
        assert ds[setup]["losses"] == pytest.approx(one[setup]["losses"], abs=2e-3), setup
