"""The CLI's help (issue 17): fast (no torch or peft imported on the help paths) and grouped
(`tune --method M --help` lists the shared settings and M's own; `compare --help` one group per
method)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from lmadapt.cli import app
from lmadapt.methods import method_names

runner = CliRunner()

# runs the console entry point with ARGS, then prints which heavy modules it imported
CHECK = """
import json, sys
from lmadapt.cli import main
sys.argv = ["lmadapt", *json.loads(sys.argv[1])]
try:
    main()
except SystemExit:
    pass
print("IMPORTED " + json.dumps(sorted(m for m in ("torch", "peft", "transformers") if m in sys.modules)))
"""


@pytest.mark.parametrize("args", [["--help"], ["tune", "--help"], ["tune", "--method", "lora", "--help"],
                                  ["compare", "--help"], ["--version"]], ids=" ".join)
def test_help_imports_no_torch(args, tmp_path):
    result = subprocess.run([sys.executable, "-c", CHECK, json.dumps(args)], capture_output=True, text=True,
                            cwd=tmp_path, timeout=120, env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    imported = json.loads(result.stdout.rsplit("IMPORTED ", 1)[1])
    assert imported == [], f"`lmadapt {' '.join(args)}` imported {imported}"
    assert "Usage" in result.stdout or "lmadapt " in result.stdout


def _help(*args: str) -> str:
    result = runner.invoke(app, [*args, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def test_top_level_help_lists_every_command_loaded_or_not():
    text = _help()
    for command in ("tune", "compare", "eval", "predict", "push", "generate", "pull", "index", "rlhf", "distill"):
        assert f"│ {command} " in text, command


def test_tune_help_without_a_method_lists_the_train_settings_and_where_the_method_ones_are():
    text = _help("tune")
    assert "Train settings" in text and "epochs=3.0" in text
    assert "lora_r=" not in text and "prompt_virtual_tokens=" not in text
    assert "--method NAME --help" in text


@pytest.mark.parametrize("spelling", [["--method", "lora"], ["--method=lora"], ["method=lora"]])
def test_tune_method_help_lists_the_shared_settings_then_the_methods_own(spelling):
    text = _help("tune", *spelling)
    train, lora = text.index("Train settings"), text.index("lora settings")
    assert train < text.index("epochs=3.0") < lora
    assert lora < text.index("lora_r=8") and lora < text.index("lora_alpha=16.0")
    assert "prompt_virtual_tokens" not in text and "ia3_" not in text  # another method's keys


def test_tune_help_with_an_unknown_method_says_so():
    assert "unknown method 'nope'" in _help("tune", "--method", "nope")


def test_compare_help_groups_the_settings_by_method():
    text = _help("compare")
    titles = ["Compare settings", "Train settings", *(f"─ {name} settings" for name in method_names())]
    order = [text.index(title) for title in titles]
    assert order == sorted(order)
    assert text.index("─ lora settings") < text.index("lora_r=8") < text.index("─ ia3 settings")
    assert "search_trials=0" in text


def test_compare_methods_help_narrows_to_those_methods():
    text = _help("compare", "--methods", "lora,ia3@some/model")
    assert "─ lora settings" in text and "─ ia3 settings" in text and "search_trials=0" in text
    assert "─ prompt settings" not in text and "prompt_virtual_tokens" not in text
