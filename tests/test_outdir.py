"""A user's disk (issue 11, classes 1-2): which --out folders lmadapt writes, locks, replacement.

Each CLI case asserts the exit code, a one-line message without a traceback, and the file system
afterwards (the user's files intact, nothing half-written).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmadapt.errors import LmadaptError
from lmadapt.outdir import OWNED, check_out, locked, replace_folder


def _one_line_error(err: str, *needles: str) -> None:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _no_partials(parent: Path) -> None:
    assert not [p.name for p in parent.iterdir() if p.name.endswith((".partial", ".old"))]


def _tune(tiny_llama, toy_data, out, *extra) -> list:
    return ["tune", "--method", "zero-shot", "--model", tiny_llama, "--train", toy_data[0],
            "--eval", toy_data[1], "--out", out, "max_eval_examples=4", *extra]


@pytest.fixture
def user_folder(tmp_path) -> Path:
    folder = tmp_path / "mine"
    (folder / "sub").mkdir(parents=True)
    (folder / "thesis.tex").write_text("years of work")
    (folder / "sub" / "data.csv").write_text("a,b\n1,2\n")
    return folder


def test_tune_refuses_a_folder_of_user_files(run_cli, monkeypatch, tiny_llama, toy_data, user_folder):
    before = _tree(user_folder)
    code, err = run_cli(_tune(tiny_llama, toy_data, user_folder))
    assert code == 2
    _one_line_error(err, "lmadapt did not write", "--overwrite")
    assert _tree(user_folder) == before
    _no_partials(user_folder.parent)


def test_overwrite_keeps_user_files_and_replaces_only_lmadapts(run_cli, monkeypatch, tiny_llama, toy_data,
                                                               user_folder):
    before = _tree(user_folder)
    code, err = run_cli(_tune(tiny_llama, toy_data, user_folder, "--overwrite"))
    assert code == 0, err
    after = _tree(user_folder)
    assert {k: after[k] for k in before} == before  # every user file intact
    assert (user_folder / "record.json").is_file() and (user_folder / OWNED).is_file()
    owned = set(json.loads((user_folder / OWNED).read_text()))
    assert "record.json" in owned and "thesis.tex" not in owned
    # the folder now holds lmadapt's output: a rerun needs no --overwrite and keeps the user's files
    first = (user_folder / "record.json").read_text()
    code, err = run_cli(_tune(tiny_llama, toy_data, user_folder, "seed=3"))
    assert code == 0, err
    assert json.loads((user_folder / "record.json").read_text())["seed"] == 3 != json.loads(first)["seed"]
    assert {k: _tree(user_folder)[k] for k in before} == before
    _no_partials(user_folder.parent)


def test_rerun_replaces_an_earlier_run_and_drops_its_stale_files(run_cli, monkeypatch, tiny_llama, toy_data,
                                                                 tmp_path):
    out = tmp_path / "run"
    assert run_cli(_tune(tiny_llama, toy_data, out))[0] == 0
    (out / "train_log.jsonl").write_text("{}\n")  # as if an earlier run had trained
    owned = json.loads((out / OWNED).read_text())
    (out / OWNED).write_text(json.dumps([*owned, "train_log.jsonl"]))
    (out / "notes.md").write_text("my notes on this run")  # the user's own file, added later
    code, err = run_cli(_tune(tiny_llama, toy_data, out))
    assert code == 0, err
    assert not (out / "train_log.jsonl").exists()  # lmadapt's stale file went
    assert (out / "notes.md").read_text() == "my notes on this run"  # the user's stayed
    _no_partials(tmp_path)


def test_a_failed_run_leaves_the_earlier_run_intact(run_cli, monkeypatch, tiny_llama, toy_data, tmp_path):
    out = tmp_path / "run"
    assert run_cli(_tune(tiny_llama, toy_data, out))[0] == 0
    before = _tree(out)
    failing = _tune(tiny_llama, toy_data, out, "batch_size=1000")  # fails inside the run, in fit
    failing[failing.index("zero-shot")] = "head"
    code, err = run_cli(failing)
    assert code == 2
    _one_line_error(err, "batch_size")
    assert _tree(out) == before
    _no_partials(tmp_path)


@pytest.mark.parametrize("overwrite", [False, True])
def test_out_holding_an_input_is_always_refused(run_cli, monkeypatch, tiny_llama, toy_data, overwrite):
    data_dir = toy_data[0].parent
    before = _tree(data_dir)
    args = _tune(tiny_llama, toy_data, data_dir) + (["--overwrite"] if overwrite else [])
    code, err = run_cli(args)
    assert code == 2
    _one_line_error(err)
    assert _tree(data_dir) == before
    code, err = run_cli(_tune(tiny_llama, toy_data, tiny_llama, "--overwrite"))
    assert code == 2
    _one_line_error(err, "holds the input")


@pytest.mark.parametrize("out", [".", "..", "./", "sub/.."])
def test_out_dot_and_dotdot_are_one_line(run_cli, monkeypatch, tiny_llama, toy_data, tmp_path, out):
    work = tmp_path / "cwd"
    (work / "sub").mkdir(parents=True)
    (work / "keep.txt").write_text("x")
    monkeypatch.chdir(work)
    for extra in ([], ["--overwrite"]):
        code, err = run_cli(_tune(tiny_llama, toy_data, out, *extra))
        assert code == 2
        _one_line_error(err, "working directory")
    assert (work / "keep.txt").read_text() == "x" and (work / "sub").is_dir()
    assert sorted(p.name for p in work.iterdir()) == ["keep.txt", "sub"]


def test_home_and_files_are_refused(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LmadaptError, match="home folder"):
        check_out(home, overwrite=True)
    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    with pytest.raises(LmadaptError, match="is a file"):
        check_out(a_file, overwrite=True)
    with pytest.raises(LmadaptError, match="empty"):
        check_out("")
    assert check_out(tmp_path / "new") == (tmp_path / "new").resolve()
    (tmp_path / "empty").mkdir()
    assert check_out(tmp_path / "empty") == (tmp_path / "empty").resolve()


def test_replace_folder_is_all_or_nothing_for_lmadapt_folders(tmp_path):
    final, work = tmp_path / "out", tmp_path / ".out.partial"
    final.mkdir()
    (final / "record.json").write_text("old")
    (final / "lmadapt.json").write_text("{}")
    (final / "old_only.txt").write_text("x")  # a legacy run folder (no ownership list) with a foreign file
    work.mkdir()
    (work / "record.json").write_text("new")
    replace_folder(work, final)
    assert (final / "record.json").read_text() == "new"
    assert (final / "old_only.txt").read_text() == "x"  # not lmadapt's: kept
    assert not (final / "lmadapt.json").exists()  # lmadapt's, and not in the new output: gone
    assert not work.exists()
    _no_partials(tmp_path)


@pytest.mark.parametrize("command", ["compare", "merge", "reward", "dpo"])
def test_other_writers_refuse_a_user_folder(run_cli, monkeypatch, tiny_llama, toy_data, user_folder, tmp_path,
                                            command):
    before = _tree(user_folder)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"p{i}", "chosen": "good", "rejected": "bad"}) + "\n"
                             for i in range(10)))
    args = {"compare": ["compare", "--methods", "zero-shot", "--model", tiny_llama, "--train", toy_data[0],
                        "--out", user_folder],
            "merge": ["merge", tmp_path / "no-run", "--out", user_folder],
            "reward": ["rlhf", "reward", "--model", tiny_llama, "--train", pairs, "--out", user_folder],
            "dpo": ["rlhf", "dpo", "--model", tiny_llama, "--train", pairs, "--out", user_folder]}[command]
    code, err = run_cli(args)
    assert code == 2
    _one_line_error(err)
    assert _tree(user_folder) == before
    _no_partials(user_folder.parent)


def test_compare_nested_runs_hold_no_lock_files(run_cli, monkeypatch, tiny_llama, toy_data, tmp_path):
    out = tmp_path / "cmp"
    code, err = run_cli(["compare", "--methods", "zero-shot", "--model", tiny_llama,
                                            "--train", toy_data[0], "--eval", toy_data[1], "--out", out,
                                            "max_eval_examples=4"])
    assert code == 0, err
    assert not list(out.rglob("*.lock"))
    assert (out / "runs" / "zero-shot" / "record.json").is_file()


# ---- class 2: locks ---------------------------------------------------------------------------

HOLD = """
import sys, time
from lmadapt.outdir import locked
with locked(sys.argv[1]):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _holder(target: Path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(target), str(seconds)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_writer_fails_at_once_naming_the_holder(run_cli, monkeypatch, tiny_llama, toy_data, tmp_path):
    out = tmp_path / "run"
    holder = _holder(out, 60)
    try:
        began = time.perf_counter()
        code, err = run_cli(_tune(tiny_llama, toy_data, out))
        assert time.perf_counter() - began < 30
        assert code == 2
        _one_line_error(err, f"pid {holder.pid}", "another lmadapt process")
        assert not out.exists()
        _no_partials(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert run_cli(_tune(tiny_llama, toy_data, out))[0] == 0  # free again


def test_lock_waits_up_to_its_timeout(tmp_path):
    target = tmp_path / "idx"
    holder = _holder(target, 1.0)
    try:
        with locked(target, timeout=30):  # the holder lets go after about a second
            pass
    finally:
        holder.wait()
    holder = _holder(target, 60)
    try:
        with pytest.raises(LmadaptError, match=rf"pid {holder.pid}\) after waiting 0.5 s"):
            with locked(target, timeout=0.5):
                pass
    finally:
        holder.kill()
        holder.wait()


def test_two_concurrent_runs_never_both_succeed(tiny_llama, toy_data, tmp_path):
    """Two real processes on one --out: one writes the run, the other fails with the lock error,
    unless the second started after the first had finished (then both are whole runs)."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-c", "from lmadapt.cli import main; main()",
           *map(str, _tune(tiny_llama, toy_data, out))]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes[0] == 0 and (out / "record.json").is_file()
    if codes[1] != 0:
        loser = next(err for code, err in results if code != 0)
        assert "another lmadapt process" in loser and "Traceback" not in loser
    _no_partials(tmp_path)


def test_rationale_output_never_appends_to_a_users_file(tmp_path):
    from lmadapt.methods.distill.rationales import check_rationale_out

    data = tmp_path / "inputs.jsonl"
    data.write_text('{"input": "1+1", "label": "2"}\n')
    mine = tmp_path / "notes.jsonl"
    mine.write_text('{"todo": "buy milk"}\n')
    with pytest.raises(LmadaptError, match="is an input file"):
        check_rationale_out(data, (str(data), tmp_path / "shots.jsonl"))
    with pytest.raises(LmadaptError, match="not a rationale file lmadapt wrote"):
        check_rationale_out(mine, (str(data),))
    with pytest.raises(LmadaptError, match="is a folder"):
        check_rationale_out(tmp_path, (str(data),))
    assert mine.read_text() == '{"todo": "buy milk"}\n'
    check_rationale_out(tmp_path / "new.jsonl", (str(data),))  # new: fine


def test_record_reports_eval_texts_seen_in_training(run_cli, monkeypatch, tiny_llama, toy_data, tmp_path):
    out = tmp_path / "run"
    assert run_cli(_tune(tiny_llama, toy_data, out))[0] == 0
    assert json.loads((out / "record.json").read_text())["extra"]["train_eval_overlap"] == 0
    code, err = run_cli(["tune", "--method", "zero-shot", "--model", tiny_llama, "--train",
                                            toy_data[0], "--eval", toy_data[0], "--out", out, "max_eval_examples=5"])
    assert code == 0, err
    assert json.loads((out / "record.json").read_text())["extra"]["train_eval_overlap"] == 5
