"""Chat and instruction data (issue 13, items 1-2): messages / alpaca / prompt-completion rows,
prompts rendered with the tokenizer's chat template, the loss on assistant tokens only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from lmadapt.data import DataSpec, load_task
from lmadapt.data.chat import ChatExample, prompt_messages
from lmadapt.errors import LmadaptError
from lmadapt.models.load import ModelSpec
from lmadapt.models.task_model import build_task_model
from tiny import write_jsonl

CHAT = [
    {"messages": [{"role": "user", "content": "good film"}, {"role": "assistant", "content": "yes"}]},
    {"messages": [{"role": "system", "content": "the acting"},
                  {"role": "user", "content": "bad film"}, {"role": "assistant", "content": "no"},
                  {"role": "user", "content": "dull plot"}, {"role": "assistant", "content": "no"}]},
]


def _messages_file(tmp_path: Path, rows=None, n: int = 1) -> Path:
    return write_jsonl(tmp_path / "chat.jsonl", (rows or CHAT) * n)


def _tokens(tm, batch, row: int) -> list[tuple[str, bool]]:
    ids = batch["input_ids"][row][batch["attention_mask"][row].bool()]
    labels = batch["labels"][row][batch["attention_mask"][row].bool()]
    return list(zip(tm.tokenizer.convert_ids_to_tokens(ids.tolist()), (labels != -100).tolist(), strict=True))


def test_assistant_only_mask_equals_the_hand_built_one(tiny_chat_llama, tmp_path):
    task = load_task(_messages_file(tmp_path))
    tm = build_task_model(ModelSpec(model=str(tiny_chat_llama)), task)
    batch = tm.collate(task.examples)
    single = [("<|im_start|>", False), ("user", False), ("good", False), ("film", False), ("<|im_end|>", False),
              ("<|im_start|>", False), ("assistant", False), ("yes", True), ("<|im_end|>", True)]
    assert _tokens(tm, batch, 0) == single
    turn = [("<|im_start|>", False), ("assistant", False), ("no", True), ("<|im_end|>", True)]
    multi = ([("<|im_start|>", False), ("system", False), ("the", False), ("acting", False), ("<|im_end|>", False),
              ("<|im_start|>", False), ("user", False), ("bad", False), ("film", False), ("<|im_end|>", False)]
             + turn + [("<|im_start|>", False), ("user", False), ("dull", False), ("plot", False),
                       ("<|im_end|>", False)] + turn)
    assert _tokens(tm, batch, 1) == multi
    last_only = load_task(_messages_file(tmp_path), DataSpec(train_on="last"))
    tm.task = last_only
    flags = [covered for _, covered in _tokens(tm, tm.collate(last_only.examples), 1)]
    assert sum(flags) == 2 and flags[-2:] == [True, True]  # only the last turn's "no <|im_end|>"


def test_inference_prompt_is_the_templates_generation_prompt(tiny_chat_llama, tmp_path):
    task = load_task(_messages_file(tmp_path))
    tm = build_task_model(ModelSpec(model=str(tiny_chat_llama)), task)
    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_llama)
    single, multi = task.examples
    assert single.text == "good film" and single.target == "yes"
    assert tm.prompt(single.text) == tokenizer.apply_chat_template(
        [{"role": "user", "content": "good film"}], tokenize=False, add_generation_prompt=True)
    assert prompt_messages(multi.text) == CHAT[1]["messages"][:-1]
    assert tm.prompt(multi.text) == tokenizer.apply_chat_template(
        CHAT[1]["messages"][:-1], tokenize=False, add_generation_prompt=True)


def test_formats_are_detected_and_forced(tmp_path):
    alpaca = write_jsonl(tmp_path / "alpaca.jsonl", [
        {"instruction": "rate it", "input": "good film", "output": "yes"},
        {"instruction": "say no", "output": "no"}])
    task = load_task(alpaca)
    assert task.format == "alpaca" and task.kind == "generation"
    assert [ex.text for ex in task.examples] == ["rate it\n\ngood film", "say no"]  # input kept
    assert isinstance(task.examples[0], ChatExample) and task.examples[0].target == "yes"
    pc = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "good film", "completion": " yes"}])
    task = load_task(pc)
    assert task.format == "prompt_completion" and task.examples[0].target == "yes"
    plain = load_task(alpaca, DataSpec(format="text", input_field="instruction"))
    assert plain.format == "text" and plain.examples[0].text == "rate it"
    assert load_task(_messages_file(tmp_path)).format == "messages"


@pytest.mark.parametrize("row, message", [
    ({"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}, "has role 'robot'"),
    ({"messages": [{"role": "user", "content": "x"}]}, "last message must be the assistant's"),
    ({"messages": [{"role": "user", "content": " "}, {"role": "assistant", "content": "y"}]}, "is empty"),
    ({"messages": [{"role": "assistant", "content": "y"}]}, "no user turn"),
    ({"messages": "hello"}, "is text, not a list"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "system", "content": "s"},
                   {"role": "assistant", "content": "y"}]}, "system message may only come first"),
    ({"instruction": "x", "output": ""}, "'output' is missing or empty"),
])
def test_bad_chat_rows_are_one_line_with_file_and_line(tmp_path, row, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [CHAT[0], row] if "messages" in row else [row])
    line = 2 if "messages" in row else 1
    with pytest.raises(LmadaptError, match=rf"bad.jsonl:{line}: .*{message}"):
        load_task(path)


def test_chat_data_on_a_model_without_template_names_the_setting(tiny_llama, tiny_chat_llama, tmp_path, run_cli):
    chat = _messages_file(tmp_path, [{"messages": [{"role": "user", "content": f"film {i}"},
                                                   {"role": "assistant", "content": "yes"}]} for i in range(10)])
    code, err = run_cli(["tune", "--method", "zero-shot", "--model", tiny_llama, "--train", chat,
                         "--out", tmp_path / "o"])
    assert code == 2 and "has none; pass chat_template=PATH" in err and len(err.strip().splitlines()) == 1
    template = tmp_path / "chatml.jinja"
    template.write_text(AutoTokenizer.from_pretrained(tiny_chat_llama).chat_template)
    task = load_task(chat, DataSpec(chat_template=str(template)))
    assert task.chat_template.startswith("{% for m in messages %}")
    assert load_task(chat, DataSpec(chat_template="none")).chat is False
    with pytest.raises(LmadaptError, match="chat_template=nope.jinja: no such file"):
        load_task(chat, DataSpec(chat_template="nope.jinja"))


def test_chat_run_trains_on_assistant_tokens_and_reloads(tiny_chat_llama, tmp_path, run_cli):
    rows = [{"messages": [{"role": "user", "content": f"{w} film"}, {"role": "assistant", "content": a}]}
            for w, a in [("good", "yes"), ("bad", "no")] * 8]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    out = tmp_path / "run"
    code, err = run_cli(["tune", "--method", "full", "--model", tiny_chat_llama, "--train", train, "--eval", train,
                         "--out", out, "epochs=4", "batch_size=8", "lr=3e-3", "max_new_tokens=4"])
    assert code == 0, err
    record = json.loads((out / "record.json").read_text())
    assert record["metric"] == "exact_match" and record["score"] == 1.0  # learned to answer and stop
    manifest = json.loads((out / "lmadapt.json").read_text())
    assert manifest["task"]["format"] == "messages"
    code, err = run_cli(["eval", out, "--data", train, "--json"])
    assert code == 0, err
    from lmadapt.run import load_run

    adapted, task, _ = load_run(out)
    assert task.chat and adapted.predict(["good film", "bad film"]) == ["yes", "no"]
