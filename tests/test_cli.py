"""The CLI end to end on tiny models, and bad input: one-line errors, no partial output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lmadapt.cli import app
from lmadapt.methods import REGISTRY

runner = CliRunner()
LMADAPT = [sys.executable, "-c", "from lmadapt.cli import main; main()"]


def test_console_entry_point_prints_one_line(tmp_path):
    """The real console script in a subprocess: exit 2, one line on stderr, no traceback."""
    result = subprocess.run([*LMADAPT, "tune", "--method", "nope", "--model", "x", "--train", "x.jsonl"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300,
                            env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: unknown method 'nope'; known methods: " +
                                                  ", ".join(REGISTRY)]


def test_unknown_option_is_one_line_not_a_traceback(run_cli, monkeypatch):
    code, err = run_cli(["generate", "--model", "x", "--prompt", "hi"])
    assert code == 2
    assert "No such option: --model" in err and "Traceback" not in err


def test_every_command_has_help():
    for command in ([], ["tune"], ["compare"], ["eval"], ["predict"], ["demo"], ["methods"]):
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0, result.output
        assert "Usage" in result.output
    assert "max_train_examples" in runner.invoke(app, ["tune", "--help"]).output


def test_tune_eval_predict_roundtrip(tiny_bert, toy_data, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["tune", "--method", "head", "--model", str(tiny_bert), "--train", str(toy_data[0]),
                                 "--eval", str(toy_data[1]), "--out", str(out), "epochs=1", "batch_size=8"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "record.json").read_text())
    for key in ("method", "model", "task", "metric", "score", "ci_low", "ci_high", "trainable_params",
                "total_params", "peak_memory_bytes", "train_seconds", "eval_examples_per_second",
                "artifact_bytes", "seed", "versions"):
        assert key in record
    assert record["method"] == "head" and record["peak_memory_bytes"] > 0
    assert (out / "runs.sqlite").exists() and (out / "artifact" / "trained.safetensors").exists()
    evaluated = runner.invoke(app, ["eval", str(out), "--data", str(toy_data[1]), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    scores = json.loads(next(line for line in evaluated.output.splitlines() if line.startswith("{")))
    assert scores["score"] == pytest.approx(record["score"])
    predicted = runner.invoke(app, ["predict", str(out), "--text", "good film", "--text", "bad film"])
    lines = [json.loads(line) for line in predicted.output.strip().splitlines() if line.startswith("{")]
    assert [r["text"] for r in lines] == ["good film", "bad film"]
    assert all(r["prediction"] in ("positive", "negative") for r in lines)


def test_compare_writes_results_report_and_plot(tiny_bert, tiny_llama, toy_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "run.yaml"
    cfg.write_text("train:\n  epochs: 1\n  batch_size: 8\nshots: 2\n")
    out = tmp_path / "cmp"
    result = runner.invoke(app, ["compare", "--methods", f"features,head,zero-shot@{tiny_llama},icl@{tiny_llama}",
                                 "--model", str(tiny_bert), "--train", str(toy_data[0]), "--eval", str(toy_data[1]),
                                 "--out", str(out), "--config", str(cfg), "cv_folds=2"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["method"] for r in records] == ["features", "head", "zero-shot", "icl"]
    assert (out / "pareto.png").stat().st_size > 1000
    assert "| features |" in (out / "report.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["tune", "--method", "nope", "--model", "x", "--train", "x.jsonl"], "unknown method 'nope'; known methods:"),
    (["tune", "--method", "head", "--model", "x", "--train", "missing.jsonl"], "data file missing.jsonl does not exist"),
    (["tune", "--method", "head", "--model", "x", "--train", "t.jsonl", "nosuch=1"], "unknown setting 'nosuch'"),
    (["tune", "--method", "head", "--model", "x", "--train", "t.jsonl", "epochs=abc"], "epochs='abc' is not a valid float"),
    (["compare", "--methods", "head,bogus", "--model", "x", "--train", "t.jsonl"], "unknown method 'bogus'"),
])
def test_user_errors_are_one_line(tmp_path, args, message, monkeypatch, run_cli):
    (tmp_path / "t.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n')
    monkeypatch.chdir(tmp_path)
    code, err = run_cli([*args, "--out", str(tmp_path / "out")])
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_method_model_kind_mismatch_and_one_class(tiny_bert, tiny_llama, tmp_path, monkeypatch, run_cli):
    one_class = tmp_path / "one.jsonl"
    one_class.write_text("".join(json.dumps({"text": f"good film {i}", "label": "positive"}) + "\n" for i in range(20)))
    gen = tmp_path / "gen.jsonl"
    gen.write_text("".join(json.dumps({"text": f"good film {i}", "output": "yes"}) + "\n" for i in range(10)))
    cases = [
        (["tune", "--method", "zero-shot", "--model", str(tiny_bert), "--train", str(one_class)],
         "cannot use encoder model"),
        (["tune", "--method", "head", "--model", str(tiny_bert), "--train", str(one_class), "batch_size=4"],
         "has one class only"),
        (["tune", "--method", "features", "--model", str(tiny_llama), "--train", str(gen)],
         "needs a classification task"),
        (["tune", "--method", "head", "--model", str(tiny_bert), "--train", str(gen)], "is an encoder and cannot generate"),
    ]
    for args, message in cases:
        out = tmp_path / "out"
        code, err = run_cli([*args, "--out", str(out)])
        assert code == 2 and message in err, (args, err[-1500:])
        assert not out.exists() and not list(Path(tmp_path).glob(".out*"))


def test_data_warnings_are_one_line(run_cli, tiny_llama, tmp_path):
    rows = [{"text": f"text {i % 6}", "label": "positive" if i % 2 else "negative"} for i in range(12)]
    data = tmp_path / "dup.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, err = run_cli(["tune", "--method", "zero-shot", "--model", tiny_llama, "--train", data,
                         "--out", tmp_path / "out"])
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "repeat an earlier row" in line]
    assert warnings == [f"warning: {data}: 6 of 12 rows repeat an earlier row's text (duplicates weigh more in training)"]


def test_version_and_a_setting_given_as_an_option(run_cli, monkeypatch, capsys):
    import lmadapt
    from lmadapt.cli import main

    monkeypatch.setattr(sys, "argv", ["lmadapt", "--version"])
    main()  # returns: exit status 0
    assert capsys.readouterr().out.strip() == f"lmadapt {lmadapt.__version__}"
    for args, hint in [(["tune", "--method", "head", "--epochs", "1"], "pass it as epochs=1 after the options"),
                       (["compare", "--search-trials=3"], "pass it as search_trials=3"),
                       (["tune", "--lora-r"], "pass it as lora_r=VALUE")]:
        code, err = run_cli(args)
        assert code == 2 and hint in err and len(err.strip().splitlines()) == 1, err
    code, err = run_cli(["tune", "--bogus"])
    assert code == 2 and "is a setting" not in err
