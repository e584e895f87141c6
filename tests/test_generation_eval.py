"""Generation at eval/predict time (issue 13, item 5): TaskModel.generate runs through the decoding
engine (same greedy outputs as `model.generate`, left padding changes nothing), stops at EOS, the
chat template's end of turn and stop strings, shows a progress bar on a terminal, and writes its
predictions as they finish so an interrupted eval resumes (`resume=true`)."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
import torch

import lmadapt.models.task_model as task_model
from lmadapt.data import DataSpec, load_task
from lmadapt.data.task import Example, Task, stop_strings
from lmadapt.decoding.sources import ModelSource
from lmadapt.errors import LmadaptError
from lmadapt.eval.prediction_log import PARTIAL, PredictionLog
from lmadapt.models.chat import end_of_turn_id
from lmadapt.models.load import ModelSpec
from lmadapt.models.task_model import build_task_model
from tiny import toy_rows, write_jsonl


def _texts(n: int, seed: int = 3) -> list[str]:
    """Inputs of varied length (so batches need left padding)."""
    rows = toy_rows(n, seed=seed, kind="generation")
    return [" ".join([r["text"]] + ["very"] * (i % 5)) for i, r in enumerate(rows)]


def _generation_model(ref: Path, texts: list[str], max_new_tokens: int = 12):
    task = Task(name="t", kind="generation", examples=[Example(t, "yes") for t in texts])
    tm = build_task_model(ModelSpec(model=str(ref)), task, max_new_tokens=max_new_tokens)
    tm.model.eval()
    return tm


def _end_often(tm, end: str, like: str) -> None:
    """Make token `end` win wherever token `like` would (with a positive logit), so rows end at
    different steps: the random tiny models otherwise rarely emit it."""
    head = tm.model.get_output_embeddings().weight
    vocab = tm.tokenizer.get_vocab()
    with torch.no_grad():
        head[vocab[end]] = head[vocab[like]] * 1.02


def _hf_reference(tm, prompts: list[str], batch_size: int, **generate_kwargs) -> list[str]:
    """Today's path before the engine: tokenizer padding + `model.generate` + batch_decode."""
    outputs = []
    for start in range(0, len(prompts), batch_size):
        enc = tm.tokenizer(prompts[start:start + batch_size], truncation=True, padding=True,
                           max_length=tm.max_length, return_tensors="pt",
                           add_special_tokens=tm.chat_template is None)
        generated = tm.model.generate(**enc, max_new_tokens=tm.max_new_tokens, do_sample=False,
                                      pad_token_id=tm.tokenizer.pad_token_id, **generate_kwargs)
        new = generated[:, enc["input_ids"].shape[1]:]
        outputs.extend(t.strip() for t in tm.tokenizer.batch_decode(new, skip_special_tokens=True))
    return outputs


def test_greedy_outputs_equal_model_generate_and_ignore_padding(tiny_llama, monkeypatch):
    texts = _texts(16)
    tm = _generation_model(tiny_llama, texts)
    _end_often(tm, "</s>", "quite")
    prompts = [tm.prompt(t) for t in texts]
    expected = _hf_reference(tm, prompts, 4)
    assert len({len(o.split()) for o in expected}) > 2  # rows end at different steps
    assert tm.generate(prompts, 4) == expected
    assert tm.generate(prompts, 1) == expected  # no padding at all
    dropped: list[int] = []
    original = ModelSource.keep_rows
    monkeypatch.setattr(ModelSource, "keep_rows", lambda self, rows: dropped.append(len(rows)) or original(self, rows))
    assert tm.generate(prompts, 16) == expected  # one batch, the most padding
    assert dropped and dropped == sorted(dropped, reverse=True) and dropped[0] <= 8  # finished rows left


CHAT = [{"messages": [{"role": "user", "content": f"{w} film"}, {"role": "assistant", "content": "yes"}]}
        for w in ["good", "bad", "the very dull", "a superb acting and", "plot", "boring story was"]]


def test_chat_outputs_equal_model_generate_and_stop_at_end_of_turn(tiny_chat_llama, tmp_path):
    task = load_task(write_jsonl(tmp_path / "chat.jsonl", CHAT))
    tm = build_task_model(ModelSpec(model=str(tiny_chat_llama)), task, max_new_tokens=10)
    tm.model.eval()
    prompts = [tm.prompt(t) for t in task.texts()]
    assert prompts[0].endswith("<|im_start|>assistant\n")
    _end_often(tm, "<|im_end|>", "plot")
    expected = _hf_reference(tm, prompts, 4)  # <|im_end|> is this model's EOS
    assert len({len(o.split()) for o in expected}) > 2
    assert tm.generate(prompts, 4) == expected and tm.generate(prompts, 1) == expected
    # a template whose end of turn is not the EOS token: generation still ends there
    im_end, eos = (tm.tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "</s>"))
    assert end_of_turn_id(tm.tokenizer, tm.chat_template) == im_end
    tm.tokenizer.eos_token = "</s>"
    tm.model.generation_config.eos_token_id = eos
    past_turn = _hf_reference(tm, prompts, 4)
    at_turn = _hf_reference(tm, prompts, 4, eos_token_id=[eos, im_end])
    assert past_turn != at_turn  # the end-of-turn token matters here
    assert tm.generate(prompts, 4) == at_turn


def test_stop_strings_cut_the_output(tiny_llama):
    texts = _texts(8)
    tm = _generation_model(tiny_llama, texts)
    prompts = [tm.prompt(t) for t in texts]
    full = tm.generate(prompts, 4)
    tm.task.stop = ("quite", "lovely")
    cut = tm.generate(prompts, 4)
    for whole, short in zip(full, cut, strict=True):
        at = [whole.find(s) for s in ("quite", "lovely") if s in whole]
        assert short == (whole[:min(at)] if at else whole).strip()
    assert cut != full


def test_stop_setting_parses_lists_json_and_strings(tmp_path):
    assert stop_strings('["\\n\\n", "Q:"]') == ("\n\n", "Q:")
    assert stop_strings("Question:") == ("Question:",) and stop_strings(["a", "b"]) == ("a", "b")
    assert stop_strings("") == ()
    with pytest.raises(LmadaptError, match="not a JSON list"):
        stop_strings('["a", ')
    with pytest.raises(LmadaptError, match="non-empty"):
        stop_strings(["a", ""])
    path = write_jsonl(tmp_path / "g.jsonl", toy_rows(4, kind="generation"))
    assert load_task(path, DataSpec(stop=("\n",))).stop == ("\n",)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_and_for_long_work_in_a_log(tiny_llama, monkeypatch):
    """On a terminal always; in a log (stderr not a terminal) only when the work spans several
    batches, and then its last state stays there (a background eval shows its progress)."""
    texts = _texts(8)
    tm = _generation_model(tiny_llama, texts, max_new_tokens=3)
    prompts = [tm.prompt(t) for t in texts]
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    tm.generate(prompts, 4)
    shown = terminal.getvalue()
    assert "generate" in shown and "/8" in shown and "ex/s" in shown
    pipe = io.StringIO()
    monkeypatch.setattr(sys, "stderr", pipe)
    tm.generate(prompts[:4], 4)  # one batch: nothing in a log
    assert pipe.getvalue() == ""
    tm.generate(prompts, 4)  # two batches
    logged = pipe.getvalue()
    assert "generate" in logged and "8/8" in logged and logged.endswith("\n")


def _zero_shot(model: Path, train: Path, eval_: Path, out: Path, *extra: str) -> list:
    return ["tune", "--method", "zero-shot", "--model", model, "--train", train, "--eval", eval_,
            "--out", out, "eval_batch_size=4", "max_new_tokens=6", *extra]


def _interrupt_after_batches(monkeypatch, batches: int) -> None:
    """Ctrl-C right after the eval's `batches`-th batch reached the prediction log."""
    original, seen = PredictionLog.append, []

    def append_then_stop(self, call, pairs):
        original(self, call, pairs)
        seen.append(len(pairs))
        if len(seen) == batches:
            raise KeyboardInterrupt

    monkeypatch.setattr(PredictionLog, "append", append_then_stop)


def _generated_rows(monkeypatch) -> list[int]:
    """Rows the engine generates, per batch."""
    rows: list[int] = []
    original = task_model.complete
    monkeypatch.setattr(task_model, "complete", lambda source, tok, ids, *a: rows.append(len(ids)) or
                        original(source, tok, ids, *a))
    return rows


def test_interrupted_eval_resumes_from_its_predictions(run_cli, monkeypatch, tiny_llama, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", toy_rows(8, seed=1, kind="generation"))
    eval_ = write_jsonl(tmp_path / "eval.jsonl", toy_rows(12, seed=2, kind="generation"))
    fresh = tmp_path / "fresh"
    assert run_cli(_zero_shot(tiny_llama, train, eval_, fresh))[0] == 0
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        _interrupt_after_batches(patch, 2)
        assert run_cli(_zero_shot(tiny_llama, train, eval_, out))[0] == 130
    partial = out.with_name(".run.partial") / PARTIAL
    lines = [json.loads(line) for line in partial.read_text().splitlines()]
    assert "settings" in lines[0] and len(lines) == 1 + 8 and not out.exists()
    kept = partial.read_bytes()
    # other settings or other eval examples: refused in one line, the predictions stay
    other_eval = write_jsonl(tmp_path / "other.jsonl", toy_rows(12, seed=5, kind="generation"))
    for args, key in [(_zero_shot(tiny_llama, train, eval_, out, "resume=true", "max_new_tokens=5"),
                       "train.max_new_tokens was 6"),
                      (_zero_shot(tiny_llama, train, other_eval, out, "resume=true"),
                       "eval_data_sha256 was 'other examples'"),
                      (_zero_shot(tiny_llama, train, eval_, out, "resume=true", "stop=quite"), "task.stop was None")]:
        code, err = run_cli(args)
        assert code == 2 and len(err.strip().splitlines()) == 1 and key in err, err
        assert partial.read_bytes() == kept
    # the same settings: only the 4 unpredicted examples are generated, the result is a fresh run's
    generated = _generated_rows(monkeypatch)
    code, err = run_cli(_zero_shot(tiny_llama, train, eval_, out, "resume=true"))
    assert code == 0, err
    assert sum(generated) == 4
    predictions = (out / "predictions.jsonl").read_text()
    assert predictions == (fresh / "predictions.jsonl").read_text()
    assert not out.with_name(".run.partial").exists() and not (out / PARTIAL).exists()
    record = json.loads((out / "record.json").read_text())
    assert record["eval_examples"] == 12 and record["eval_examples_per_second"] > 0


def test_a_run_without_resume_starts_its_eval_over(run_cli, monkeypatch, tiny_llama, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", toy_rows(8, seed=1, kind="generation"))
    eval_ = write_jsonl(tmp_path / "eval.jsonl", toy_rows(8, seed=2, kind="generation"))
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        _interrupt_after_batches(patch, 1)
        assert run_cli(_zero_shot(tiny_llama, train, eval_, out))[0] == 130
    assert (out.with_name(".run.partial") / PARTIAL).is_file()
    generated = _generated_rows(monkeypatch)
    code, err = run_cli(_zero_shot(tiny_llama, train, eval_, out))
    assert code == 0 and "starting over" in err
    assert sum(generated) == 8


def test_an_interrupted_proxy_eval_resumes_its_parts_too(run_cli, monkeypatch, tiny_llama, tmp_path):
    """Proxy-tuning generates three times in its eval (the proxy, then the base and the expert
    alone for its figures, at the eval's batch size); all three go through the prediction log, so a
    run stopped inside the base's pass generates only what is missing and ends as a fresh run does."""
    from test_proxy_method import make_small_llama

    small = make_small_llama(tmp_path / "small", tiny_llama)
    train = write_jsonl(tmp_path / "train.jsonl", toy_rows(8, seed=1, kind="generation"))
    eval_ = write_jsonl(tmp_path / "eval.jsonl", toy_rows(12, seed=2, kind="generation"))

    def proxy(out: Path, *extra: str) -> list:
        return ["tune", "--method", "proxy", "--model", tiny_llama, "--train", train, "--eval", eval_,
                "--out", out, f"proxy_small={small}", "eval_batch_size=4", "max_new_tokens=6", "epochs=1", "batch_size=4",
                "val_split=0", *extra]

    fresh = tmp_path / "fresh"
    generated = _generated_rows(monkeypatch)
    code, err = run_cli(proxy(fresh))
    assert code == 0, err
    assert generated == [4] * 9  # proxy, base, expert: 12 each, all at the eval's batch size
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        _interrupt_after_batches(patch, 4)  # the proxy's 3 batches of 4, then the base's first
        assert run_cli(proxy(out))[0] == 130
    generated.clear()
    code, err = run_cli(proxy(out, "resume=true"))
    assert code == 0, err
    assert generated == [4] * 5  # the base's last 8, then the expert's 12
    assert (out / "predictions.jsonl").read_text() == (fresh / "predictions.jsonl").read_text()
    records = [json.loads((folder / "record.json").read_text()) for folder in (fresh, out)]
    for key in ("score", "base_score", "expert_score"):
        assert records[0]["extra"].get(key, records[0].get(key)) == records[1]["extra"].get(key, records[1].get(key))
    nll = records[1]["extra"]["reference_nll_by_alpha"]  # the references' NLL under Eq. 1, per alpha
    assert nll == records[0]["extra"]["reference_nll_by_alpha"] and set(nll) == {"0.0", "0.25", "0.5", "1.0", "1.5", "2.0"}
