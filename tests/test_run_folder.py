"""A run folder is data, not code: loading one imports nothing it names and never turns on
trust_remote_code; a malformed manifest is one line naming the file; model paths are stored
resolved, so a run works from any directory and moves with a model kept inside it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lmadapt.manifest import load_path, store_path
from lmadapt.run import load_run


def _one_line(code: int, err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, (code, err)
    return lines[0]


def _manifest(run: Path) -> dict:
    return json.loads((run / "lmadapt.json").read_text())


@pytest.fixture(scope="module")
def head_run(tiny_bert, toy_data, tmp_path_factory) -> Path:
    """A finished `head` run on tiny BERT (made once; copy it before changing it)."""
    from lmadapt.cli import main

    out = tmp_path_factory.mktemp("head") / "run"
    argv = sys.argv
    sys.argv = ["lmadapt", "tune", "--method", "head", "--model", str(tiny_bert), "--train", str(toy_data[0]),
                "--eval", str(toy_data[1]), "--out", str(out), "--device", "cpu", "epochs=1", "batch_size=8"]
    try:
        main()
    except SystemExit as exit_:
        assert not exit_.code
    finally:
        sys.argv = argv
    return out


def _copy(run: Path, dest: Path, change=None, text: str | None = None) -> Path:
    shutil.copytree(run, dest)
    if text is not None:
        (dest / "lmadapt.json").write_text(text)
    elif change is not None:
        manifest = _manifest(dest)
        change(manifest)
        (dest / "lmadapt.json").write_text(json.dumps(manifest))
    return dest


# ---- a malformed manifest is one line ------------------------------------------------------

def _set(section: str, key: str, value):
    return lambda m: m[section].__setitem__(key, value)


@pytest.mark.parametrize("name, change, text, message", [
    ("bad-json", None, '{"format": 1,', "lmadapt.json: not valid JSON (Expecting property name"),
    ("empty", None, "", "lmadapt.json: not valid JSON"),
    ("not-an-object", None, "[1, 2]", "lmadapt.json: expected a JSON object, found list"),
    ("no-model", lambda m: m.pop("model"), None, "lmadapt.json: missing section 'model'"),
    ("no-task", lambda m: m.pop("task"), None, "lmadapt.json: missing section 'task'"),
    ("no-method", lambda m: m.pop("method"), None, "lmadapt.json: missing section 'method'"),
    ("unknown-top-key", lambda m: m.update(extra=1), None, "lmadapt.json: unknown key 'extra'"),
    ("unknown-model-key", _set("model", "revision", "main"), None, "lmadapt.json: unknown key model.revision"),
    ("unknown-train-key", _set("train", "nosuch", 1), None, "lmadapt.json: unknown key train.nosuch"),
    ("unknown-method-key", _set("method_config", "nosuch", 1), None, "unknown key method_config.nosuch"),
    ("wrong-type-train", _set("train", "epochs", "three"), None, "lmadapt.json: train.epochs = 'three' is not a float"),
    ("wrong-type-labels", _set("task", "labels", "positive"), None, "task.labels = 'positive' is not a list of str"),
    ("wrong-type-model", _set("model", "model", 5), None, "lmadapt.json: model.model is missing or not a model"),
    ("section-not-object", lambda m: m.update(train=[1]), None, "section 'train' must be an object, found list"),
    ("bad-dtype", _set("model", "dtype", "float8"), None, "lmadapt.json: model: unknown dtype 'float8'"),
    ("bad-kind", _set("task", "kind", "regression"), None, "task.kind = 'regression' is not one of"),
    ("unknown-method", lambda m: m.update(method="nope"), None, "lmadapt.json: unknown method 'nope'"),
    ("other-format", lambda m: m.update(format=2), None, "lmadapt.json: format 2 is not 1"),
    ("base-model-gone", _set("model", "model", "/nonexistent/bert"), None,
     "lmadapt.json: model /nonexistent/bert does not exist"),
])
def test_malformed_manifest_is_one_line(name, change, text, message, head_run, tmp_path, run_cli):
    run = _copy(head_run, tmp_path / name, change, text)
    for command in (["predict", run, "--text", "good film"], ["eval", run, "--data", run / "predictions.jsonl"]):
        line = _one_line(*run_cli(command))
        assert str(run / "lmadapt.json") in line and message in line, line


def test_model_that_does_not_match_the_artifact_is_one_line(head_run, tiny_llama, tmp_path, run_cli):
    run = _copy(head_run, tmp_path / "other-model", _set("model", "model", str(tiny_llama)))
    line = _one_line(*run_cli(["predict", run, "--text", "good film"]))
    assert f"{run / 'lmadapt.json'}: the run was trained on a model with model_type='bert'" in line
    assert "point model.model at the model it was trained on" in line


def test_reward_flag_is_for_rlhf_runs_only(head_run, run_cli):
    line = _one_line(*run_cli(["eval", head_run, "--data", head_run / "predictions.jsonl", "--reward", "x.py:f"]))
    assert "--reward applies to rlhf runs only" in line


def test_rlhf_stage_folder_is_named_not_a_traceback(tmp_path, run_cli):
    (tmp_path / "dpo").mkdir()
    (tmp_path / "dpo" / "lmadapt.json").write_text(json.dumps({"format": 1, "method": "rlhf-dpo"}))
    line = _one_line(*run_cli(["predict", tmp_path / "dpo", "--text", "hi"]))
    assert "holds an `lmadapt rlhf dpo` run, not a tune run" in line


# ---- paths are stored resolved -------------------------------------------------------------

def test_store_and_load_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "m").mkdir(parents=True)
    (tmp_path / "run" / "base").mkdir(parents=True)
    (tmp_path / "reward.py").write_text("")
    assert store_path("models/m") == str(tmp_path / "models" / "m")
    assert store_path("run/base", tmp_path / "run") == "base"  # inside the run folder: relative to it
    assert store_path("reward.py:score") == f"{tmp_path / 'reward.py'}:score"
    for unchanged in ("gpt2", "org/model", "smollm2-135m", "pkg.rewards:score", ""):
        assert store_path(unchanged) == unchanged
    assert load_path("base", tmp_path / "run") == str(tmp_path / "run" / "base")
    assert load_path("gpt2", tmp_path / "run") == "gpt2" and load_path("/abs/x", tmp_path / "run") == "/abs/x"


def test_run_works_from_any_directory_and_moves_with_its_model(tiny_bert, toy_data, tmp_path, monkeypatch, run_cli):
    work = tmp_path / "project"
    shutil.copytree(tiny_bert, work / "models" / "bert")
    monkeypatch.chdir(work)
    code, err = run_cli(["tune", "--method", "head", "--model", "models/bert", "--train", toy_data[0],
                         "--eval", toy_data[1], "--out", "run", "--device", "cpu", "epochs=1", "batch_size=8"])
    assert code == 0, err
    assert _manifest(work / "run")["model"]["model"] == str(work / "models" / "bert")  # stored absolute
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, err = run_cli(["predict", work / "run", "--text", "good film"])
    assert code == 0, err
    # a run folder that carries its base model inside (model.model relative to the folder) moves with it
    shutil.move(str(work / "models" / "bert"), str(work / "run" / "base"))
    manifest = _manifest(work / "run")
    manifest["model"]["model"] = "base"
    (work / "run" / "lmadapt.json").write_text(json.dumps(manifest))
    shutil.move(str(work / "run"), str(elsewhere / "moved"))
    adapted, _, _ = load_run(elsewhere / "moved", "cpu")
    assert adapted.predict(["good film"]) and not (work / "run").exists()


def test_reward_run_stores_resolved_model_paths(tiny_bert, tmp_path, monkeypatch, run_cli):
    from lmadapt.data.task import Task
    from lmadapt.methods.rlhf.config import RlhfMethodConfig
    from lmadapt.models.load import ModelSpec
    from lmadapt.run import _manifest as manifest_of
    from lmadapt.train.config import TrainConfig

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"p{i}", "chosen": "good", "rejected": "bad"}) + "\n"
                             for i in range(8)))
    monkeypatch.chdir(tiny_bert.parent)
    code, err = run_cli(["rlhf", "reward", "--model", tiny_bert.name, "--train", pairs, "--out", tmp_path / "rm",
                         "--device", "cpu", "epochs=1", "batch_size=2"])
    assert code == 0, err
    assert _manifest(tmp_path / "rm")["model"]["model"] == str(tiny_bert)  # a reward run is a common run
    (tmp_path / "r.py").write_text("")
    monkeypatch.chdir(tmp_path)
    saved = manifest_of("rlhf", RlhfMethodConfig(rlhf_reward="r.py:f"), ModelSpec(model=str(tiny_bert)), TrainConfig(),
                        Task.skeleton("p", "prompts", [], "{text}"))
    assert saved["model"]["model"] == str(tiny_bert)
    assert saved["method_config"]["rlhf_reward"] == f"{tmp_path / 'r.py'}:f"


# ---- nothing in a run folder runs code -----------------------------------------------------

def test_loading_an_rlhf_run_never_imports_its_python_reward(tiny_llama, tmp_path, monkeypatch, run_cli):
    marker = tmp_path / "imported"
    (tmp_path / "reward.py").write_text(
        f"open({str(marker)!r}, 'a').write('x')\n"
        "def reward(prompts, responses):\n"
        "    return [float(r.split().count('good')) for r in responses]\n")
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"text": f"the movie {w}"}) + "\n"
                                              for w in ("was", "is", "plot", "story", "acting", "film", "very")))
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    code, err = run_cli(["tune", "--method", "rlhf", "--model", tiny_llama, "--train", "p.jsonl", "--kind", "prompts",
                         "--out", run, "--device", "cpu", "rlhf_reward=reward.py:reward", "rlhf_steps=1",
                         "rlhf_rollout_batch=4", "rlhf_max_new_tokens=4"])
    assert code == 0, err
    assert _manifest(run)["method_config"]["rlhf_reward"] == f"{tmp_path / 'reward.py'}:reward"  # resolved
    marker.unlink()  # training imported it; loading must not
    code, err = run_cli(["predict", run, "--text", "the movie"])  # the policy generates; no reward needed
    assert code == 0 and not marker.exists(), err
    line = _one_line(*run_cli(["eval", run, "--data", "p.jsonl"]))
    assert "is Python code, which is never imported from a run folder" in line and not marker.exists()
    assert f"pass --reward {tmp_path / 'reward.py'}:reward" in line
    code, err = run_cli(["eval", run, "--data", "p.jsonl", "--reward", "reward.py:reward", "--json"])
    assert code == 0 and marker.exists(), err  # given on the command line: imported


def test_manifest_trust_remote_code_is_never_honoured(tiny_bert, toy_data, tmp_path, run_cli):
    """A model folder with its own code: a run whose manifest says trust_remote_code=true loads
    without running that code; only --trust-remote-code at load time runs it."""
    model = tmp_path / "custom-bert"
    shutil.copytree(tiny_bert, model)
    (model / "configuration_custom.py").write_text(
        "import os\nopen(os.environ['CUSTOM_CODE_MARKER'], 'a').write('x')\n"
        "from transformers import BertConfig\n\nclass CustomConfig(BertConfig):\n    model_type = 'bert'\n")
    config = json.loads((model / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_custom.CustomConfig"}
    (model / "config.json").write_text(json.dumps(config))
    run = tmp_path / "run"
    code, err = run_cli(["tune", "--method", "head", "--model", model, "--train", toy_data[0], "--eval", toy_data[1],
                         "--out", run, "--device", "cpu", "epochs=1", "batch_size=8"])
    assert code == 0, err
    manifest = _manifest(run)
    manifest["model"]["trust_remote_code"] = True  # as a shared (or tampered) run folder might say
    (run / "lmadapt.json").write_text(json.dumps(manifest))
    marker = tmp_path / "ran"
    env = {**os.environ, "CUSTOM_CODE_MARKER": str(marker), "HF_MODULES_CACHE": str(tmp_path / "modules"),
           "HF_HUB_OFFLINE": "1"}
    lmadapt = [sys.executable, "-c", "from lmadapt.cli import main; main()"]
    plain = subprocess.run([*lmadapt, "predict", str(run), "--text", "good film", "--device", "cpu"],
                           capture_output=True, text=True, env=env, timeout=300)
    assert plain.returncode == 0 and not marker.exists(), plain.stderr[-2000:]
    assert json.loads(plain.stdout.splitlines()[-1])["prediction"] in ("positive", "negative")
    subprocess.run([*lmadapt, "predict", str(run), "--text", "good film", "--device", "cpu", "--trust-remote-code"],
                   capture_output=True, text=True, env=env, timeout=300)
    assert marker.exists()  # the flag, and only the flag, lets the model's code run
