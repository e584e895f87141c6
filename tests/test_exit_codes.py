"""Every command of the CLI, given a bad argument, exits non-zero with one line on stderr.

The commands are enumerated from the typer app itself, so a new command without a bad-argument
case here fails `test_every_command_is_covered`.
"""

from __future__ import annotations

import pytest
import typer.main

from lmadapt.cli import app


def _leaf_commands(command, path: tuple[str, ...] = ()) -> list[str]:
    """'tune', 'pull model', ... every runnable command path of the app."""
    if hasattr(command, "commands"):  # a group (typer vendors click, so no isinstance check)
        return [leaf for name, sub in command.commands.items() for leaf in _leaf_commands(sub, (*path, name))]
    return [" ".join(path)]


COMMANDS = _leaf_commands(typer.main.get_command(app))

# command path -> (arguments with {tmp} for a fresh folder, a substring of the one error line)
BAD = {
    "tune": (["--method", "head", "--model", "x", "--train", "{tmp}/missing.jsonl", "--out", "{tmp}/out"],
             "does not exist"),
    "compare": (["--methods", "head", "--model", "x", "--train", "{tmp}/missing.jsonl", "--out", "{tmp}/out"],
                "does not exist"),
    "eval": (["{tmp}/no-run", "--data", "{tmp}/missing.jsonl"], "not an lmadapt run folder"),
    "predict": (["{tmp}/no-run", "--text", "hi"], "not an lmadapt run folder"),
    "methods": (["extra"], "unexpected extra argument"),
    "demo": (["--methods", "bogus", "--out", "{tmp}/out"], "unknown method 'bogus'"),
    "generate": (["x", "--prompts", "{tmp}/missing.txt"], "does not exist"),
    "merge": (["{tmp}/no-run", "--out", "{tmp}/out"], "not an lmadapt run folder"),
    "push": (["{tmp}/no-run", "--repo", "org/name"], "not an lmadapt run folder"),
    "pull model": (["no-such-model"], "no-such-model"),
    "pull data": (["no-such-data"], "no-such-data"),
    "pull list": (["extra"], "unexpected extra argument"),
    "pull verify": (["no-such-asset"], "no-such-asset"),
    "index build": (["--docs", "{tmp}/missing", "--out", "{tmp}/index", "--embedder", "{tmp}/no-model"],
                    "{tmp}/"),
    "index add": (["{tmp}/no-index", "--docs", "{tmp}/missing"], "no index at"),
    "index query": (["{tmp}/no-index", "a question"], "no index at"),
    "rlhf reward": (["--model", "x", "--train", "{tmp}/missing.jsonl", "--out", "{tmp}/out"], "missing.jsonl"),
    "rlhf ppo": (["--model", "x", "--prompts", "{tmp}/missing.jsonl", "--reward", "{tmp}/r.py:f",
                  "--out", "{tmp}/out"], "missing.jsonl"),
    "rlhf dpo": (["--model", "x", "--train", "{tmp}/missing.jsonl", "--out", "{tmp}/out"], "missing.jsonl"),
    "distill rationales": (["--teacher", "{tmp}/no-model", "--data", "{tmp}/missing.jsonl", "--shots",
                            "{tmp}/missing-shots.jsonl", "--out", "{tmp}/r.jsonl"], "missing"),
    "distill train": (["--model", "x", "--train", "{tmp}/missing.jsonl", "--eval", "{tmp}/missing.jsonl",
                       "--out", "{tmp}/out"], "missing.jsonl"),
}


def test_every_command_is_covered():
    assert len(COMMANDS) >= 20, COMMANDS
    assert sorted(COMMANDS) == sorted(BAD), "add a bad-argument case to BAD for each new command"


@pytest.mark.parametrize("command", sorted(BAD))
def test_bad_argument_exits_non_zero_with_one_line(command, tmp_path, monkeypatch, run_cli):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("LMADAPT_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    args, message = BAD[command]
    code, err = run_cli([*command.split(), *(a.format(tmp=tmp_path) for a in args)])
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0, (command, err)
    assert len(lines) == 1 and "Traceback" not in err, (command, err)
    assert lines[0].startswith("error: ") and message.format(tmp=tmp_path) in lines[0], (command, err)
    assert not (tmp_path / "out").exists() and not (tmp_path / "index").exists()
