"""Distilling Step-by-Step: rationale data, completion parsing, the multi-task loss (Eq. 3),
label-only inference, the method through tune/load_run, fractions table, rationale generation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import processors
from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

from lmadapt.data.loaders import load_task as load_any_task
from lmadapt.errors import LmadaptError
from lmadapt.methods import task_readers
from lmadapt.methods.distill.config import DistillConfig
from lmadapt.methods.distill.data import (
    RationaleExample,
    load_rationale_task,
    load_release,
    parse_completion,
    teacher_answer,
)
from lmadapt.methods.distill.fractions import markdown_table, nested_subsets
from lmadapt.methods.distill.loss import DistillLoss
from lmadapt.methods.distill.method import distill_loss, score_answers
from lmadapt.models.load import ModelSpec
from lmadapt.models.task_model import build_task_model
from lmadapt.train.config import TrainConfig
from tiny import VOCAB, _word_tokenizer, write_jsonl

SVAMP = "distill-step-by-step/svamp"


def rows(n: int = 8) -> list[dict]:
    """Toy rationale rows over the tiny vocabulary (words the tiny tokenizers know)."""
    out = []
    for i in range(n):
        good = i % 2 == 0
        text = "the movie was " + ("good" if good else "bad")
        out.append({"input": text, "label": "yes" if good else "no",
                    "rationale": ("good is positive" if good else "bad is negative") + " and the plot " * (i % 3)})
    return out


@pytest.fixture(scope="module")
def toy_task(tmp_path_factory):
    path = write_jsonl(tmp_path_factory.mktemp("dss") / "train.jsonl", rows())
    return load_task(path)


def load_task(ref):
    """The shared loader as every command calls it when distill is among its methods."""
    return load_any_task(ref, readers=task_readers(["distill"]))


@pytest.fixture(scope="module")
def tiny_t5(tmp_path_factory) -> Path:
    """A 2-layer T5 with a word-level tokenizer that appends </s>."""
    folder = tmp_path_factory.mktemp("t5")
    tokenizer = _word_tokenizer(PreTrainedTokenizerFast, pad_token="[PAD]", eos_token="</s>", unk_token="[UNK]")
    eos = VOCAB.index("</s>")
    tokenizer._tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", eos)])
    torch.manual_seed(0)
    config = T5Config(vocab_size=len(VOCAB), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                      pad_token_id=VOCAB.index("[PAD]"), eos_token_id=eos,
                      decoder_start_token_id=VOCAB.index("[PAD]"))
    T5ForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# ---- data -------------------------------------------------------------------------------------
def test_svamp_train_completions_parse_or_are_counted(shared_data: Path) -> None:
    task, report = load_release(shared_data / SVAMP, "train")
    assert report.total == len(task.examples) == 800
    assert report.parsed + report.unparsed == 800 and report.parsed >= 780
    assert "could not be parsed" in report.line()
    for i, ex in enumerate(task.examples):
        assert isinstance(ex, RationaleExample) and ex.style == "equation"
        if i in report.unparsed_ids:
            assert ex.rationale == "" and ex.teacher_label == ""
        else:
            assert ex.rationale and "Q:" not in ex.rationale and "The answer is" not in ex.rationale
            assert ex.teacher_label.startswith("(")
    assert task.examples[0].target == "( 84 / 2 )"  # '.0' dropped, value kept


def test_release_ref_goes_through_load_task(shared_data: Path) -> None:
    task = load_task(f"{shared_data / SVAMP}:test")
    assert len(task.examples) == 200 and task.kind == "rationale"
    with pytest.raises(LmadaptError, match="svamp_dev.json does not exist"):
        load_rationale_task(f"{shared_data / SVAMP}:dev")


def test_parse_completion_cuts_run_on_text() -> None:
    raw = "He has 3 + 4 = 7. The answer is (3 + 4).\n\nQ: There are 15 trees. The answer is (6)."
    assert parse_completion(raw) == ("He has 3 + 4 = 7.", "(3 + 4)")
    assert parse_completion("no marker here\n\nQ: x. The answer is 5.") is None
    assert parse_completion("The answer is 5.") is None  # no rationale
    assert teacher_answer("(a) dog", "choice", ["dog", "cat"]) == "dog"
    assert teacher_answer("neutral.", "nli") == "neutral"
    assert teacher_answer("(12 - (3 + 4)). Extra", "equation") == "(12 - (3 + 4))"


def test_choice_and_nli_rows(tmp_path: Path) -> None:
    mc = write_jsonl(tmp_path / "mc.jsonl", [{"question": "Pick", "choices": ["dog", "cat"], "answer": "B",
                                             "rationale": "cats purr"}])
    nli = write_jsonl(tmp_path / "nli.jsonl", [{"premise": "A", "hypothesis": "B", "label": 2, "rationale": "r"}])
    (ex_mc,), (ex_nli,) = load_task(mc).examples, load_task(nli).examples
    assert ex_mc.target == "cat" and "(b) cat" in ex_mc.text and ex_mc.style == "choice"
    assert ex_nli.target == "contradiction" and ex_nli.text.startswith("Premise: A") and ex_nli.style == "nli"
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"input": "x", "rationale": "r"}])
    with pytest.raises(LmadaptError, match=r"bad.jsonl:1: missing field 'label'"):
        load_task(bad)


# ---- loss ---------------------------------------------------------------------------------------
def token_mean_ce(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over the target tokens, computed by hand from the logits."""
    seq2seq = model.config.is_encoder_decoder  # T5 builds its decoder inputs from the labels
    logits = model(**{k: v for k, v in inputs.items() if seq2seq or k != "labels"}).logits
    labels = inputs["labels"]
    if not seq2seq:
        logits, labels = logits[:, :-1], labels[:, 1:]  # position t predicts token t+1
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                                             ignore_index=-100)


@pytest.mark.parametrize("which", ["llama", "t5"])
def test_loss_is_alpha_weighted_sum_of_task_losses(which, tiny_llama, tiny_t5, toy_task) -> None:
    folder = tiny_llama if which == "llama" else tiny_t5
    tm = build_task_model(ModelSpec(model=str(folder), device="cpu"), toy_task, max_length=64)
    tm.model.eval()
    loss = DistillLoss(tm, alpha=0.3)
    batch = loss.collate(toy_task.examples)
    with torch.no_grad():
        total = loss.loss(tm.model, batch)
        label_ce = token_mean_ce(tm.model, loss.part(batch, "label"))
        rationale_ce = token_mean_ce(tm.model, loss.part(batch, "rationale"))
        label_only = DistillLoss(tm, alpha=1.0)
        assert set(label_only.collate(toy_task.examples)) == {k for k in batch if k.startswith("label.")}
    assert torch.allclose(total, 0.3 * label_ce + 0.7 * rationale_ce, atol=1e-5)
    assert loss.count_tokens(batch) == int(batch["label.attention_mask"].sum() + batch["rationale.attention_mask"].sum())


def test_label_task_ignores_rationales(tiny_llama, toy_task) -> None:
    tm = build_task_model(ModelSpec(model=str(tiny_llama), device="cpu"), toy_task, max_length=64)
    loss = distill_loss(tm, DistillConfig())
    changed = [RationaleExample(text=ex.text, target=ex.target, source=ex.source, rationale="the the the",
                                style=ex.style) for ex in toy_task.examples]
    a, b = loss.collate(toy_task.examples), loss.collate(changed)
    for key in (k for k in a if k.startswith("label.")):
        assert torch.equal(a[key], b[key])
    assert not torch.equal(a["rationale.input_ids"], b["rationale.input_ids"])
    seen: list[str] = []
    tm.generate = lambda prompts, batch_size=8: seen.extend(prompts) or ["yes"] * len(prompts)
    assert tm.predict(["the movie was good"]) == ["yes"]
    assert seen == ["[label] the movie was good\n"]  # the label prefix only, never the rationale one


def test_unparsed_rationales_give_no_rationale_rows_and_teacher_labels(tiny_llama, toy_task) -> None:
    tm = build_task_model(ModelSpec(model=str(tiny_llama), device="cpu"), toy_task, max_length=64)
    examples = [RationaleExample(text="a", target="yes", rationale="", teacher_label="no"),
                RationaleExample(text="b", target="no", rationale="good", teacher_label="")]
    loss = DistillLoss(tm, label_source="teacher")
    assert loss.task_rows(examples, "rationale") == (["[rationale] b\n"], ["good"])
    assert loss.task_rows(examples, "label")[1] == ["no", "no"]  # teacher's, else ground truth


# ---- method through tune / load_run ------------------------------------------------------------
@pytest.mark.parametrize(("which", "student"), [("llama", "lora"), ("t5", "full")])
def test_tune_and_reload(which, student, tiny_llama, tiny_t5, toy_task, tmp_path) -> None:
    from lmadapt.run import load_run, tune

    folder = tiny_llama if which == "llama" else tiny_t5
    cfg = DistillConfig(distill_student=student, distill_default_lr=1e-2)
    train_cfg = TrainConfig(epochs=1, batch_size=4, max_length=48, max_new_tokens=4, eval_each_epoch=False)
    before = build_task_model(ModelSpec(model=str(folder), device="cpu"), toy_task).model.state_dict()
    record = tune("distill", ModelSpec(model=str(folder), device="cpu"), toy_task, toy_task, cfg, train_cfg,
                  tmp_path / "run")
    assert record.metric == "accuracy" and record.train_steps == 2  # the task's own metric is the score
    adapted, _, _ = load_run(tmp_path / "run", device="cpu")
    texts = toy_task.texts()[:3]
    saved = [json.loads(line)["prediction"] for line in (tmp_path / "run" / "predictions.jsonl").open()][:3]
    assert adapted.predict(texts) == saved
    after = adapted.tm.model.state_dict()
    changed = [k for k in before if k in after and not torch.equal(before[k], after[k])]
    assert changed or student == "lora"  # full: weights moved; lora: adapter weights exist
    if student == "lora":
        assert any("lora_" in k for k in after)


def test_bad_settings_are_one_line_errors() -> None:
    with pytest.raises(LmadaptError, match="distill_alpha"):
        DistillConfig(distill_alpha=1.5)
    with pytest.raises(LmadaptError, match="distill_label_source"):
        DistillConfig(distill_label_source="gold")
    with pytest.raises(LmadaptError, match="distill_student"):
        DistillConfig(distill_student="rlhf")


# ---- fractions and metrics ------------------------------------------------------------------------
def test_nested_subsets_and_table(toy_task) -> None:
    subsets = nested_subsets(toy_task, [0.25, 0.5, 1.0], seed=0)
    small, mid = ({ex.source for ex in subsets[f].examples} for f in (0.25, 0.5))
    assert len(small) == 2 and small <= mid and len(subsets[1.0].examples) == 8
    cell = {"metric": "equation_accuracy", "ci_low": 0.1, "ci_high": 0.3, "train_examples": 8}
    table = markdown_table([{**cell, "fraction": 1.0, "variant": "dss", "score": 0.2},
                            {**cell, "fraction": 1.0, "variant": "label-only", "score": 0.15}])
    assert "| 1 | 8 | 0.150 [0.100, 0.300] | 0.200 [0.100, 0.300] | +0.050 |" in table
    assert table.splitlines()[-1].endswith("| — | — |")  # no per-example scores: no paired test


def test_fractions_table_pairs_the_variants() -> None:
    """The paired columns are the bootstrap of DSS − label-only over the same examples: DSS right
    on 12 more of 40 problems (and wrong on none the baseline gets) is separated, p < 0.05."""
    from lmadapt.eval.significance import paired_bootstrap

    base = [1.0] * 8 + [0.0] * 32
    dss = [1.0] * 20 + [0.0] * 20
    cell = {"metric": "accuracy", "ci_low": 0.0, "ci_high": 1.0, "train_examples": 8, "fraction": 1.0}
    table = markdown_table([{**cell, "variant": "dss", "score": 0.5, "per_example": dss},
                            {**cell, "variant": "label-only", "score": 0.2, "per_example": base}])
    pair = paired_bootstrap(np.array(dss), np.array(base), seed=0)
    assert pair.p < 0.05 and pair.diff == pytest.approx(0.3)
    assert table.splitlines()[-1].endswith(f"| +0.300 | [{pair.ci_low:+.3f}, {pair.ci_high:+.3f}] | {pair.p:.3f} |")


def test_second_variant_process_may_join_the_folder_mid_cell(toy_task, tmp_path, monkeypatch) -> None:
    """Each variant may run in its own process on one --out: the label-only process starting while
    the DSS process is inside its first cell (a cell folder, no rows file yet) is accepted, and a
    folder of a user's files is still refused."""
    from lmadapt.methods.distill import fractions as fr

    out = tmp_path / "dss-run"
    joined = []

    def fake_run_one(subset, eval_task, cfg, model, train_cfg, cell_out):
        cell_out.mkdir(parents=True)
        (cell_out / "train_log.jsonl").write_text("")
        if not joined:  # the other variant's process starts now, on the same folder
            joined.append(fr.check_out(out, markers=fr.FRACTION_MARKERS))
        n = len(eval_task.examples)
        return {"metric": "accuracy", "score": 0.5, "ci_low": 0.0, "ci_high": 1.0, "per_example": [0.5] * n,
                "train_examples": len(subset.examples)}

    monkeypatch.setattr(fr, "run_one", fake_run_one)
    spec, train_cfg = ModelSpec(model="unused"), TrainConfig(batch_size=2)
    rows = fr.run_fractions(toy_task, toy_task, DistillConfig(), spec, train_cfg, [0.5, 1.0], out, variants=["dss"])
    assert joined == [out.resolve()] and [r["fraction"] for r in rows] == [0.5, 1.0]
    owned = json.loads((out / ".lmadapt-owned").read_text())
    assert {"dss-0.5", "label-only-1", "fractions.md", "rows-dss.json"} <= set(owned)
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    with pytest.raises(LmadaptError, match="did not write"):
        fr.run_fractions(toy_task, toy_task, DistillConfig(), spec, train_cfg, [1.0], user, variants=["dss"])
    assert sorted(p.name for p in user.iterdir()) == ["notes.txt"]


def test_score_answers_by_value() -> None:
    examples = [RationaleExample(text="q", target="( 84 / 2 )", style="equation"),
                RationaleExample(text="q", target="( 3 + 4 )", style="equation")]
    scores = score_answers(["(42 * 1)", "3 - 4"], examples)
    assert scores["metric"] == "equation_accuracy" and scores["score"] == 0.5


# ---- teacher rationales -------------------------------------------------------------------------
def test_rationale_generation_is_resumable(tiny_llama, tmp_path) -> None:
    from lmadapt.methods.distill.rationales import generate_rationales

    data = write_jsonl(tmp_path / "in.jsonl", [{"id": f"q{i}", "input": "the movie was good", "label": "yes"}
                                               for i in range(3)])
    shots = write_jsonl(tmp_path / "shots.jsonl", [{"input": "the film was bad", "rationale": "bad is negative",
                                                    "label": "no"}])
    out = tmp_path / "out.jsonl"
    spec = ModelSpec(model=str(tiny_llama), device="cpu")
    first = generate_rationales(spec, str(data), shots, out, batch_size=2, max_new_tokens=3, limit=2)
    assert first.total == 2 and first.parsed + first.unparsed == 2
    second = generate_rationales(spec, str(data), shots, out, batch_size=2, max_new_tokens=3)
    assert second.total == 1  # only the missing id
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert ids == ["q0", "q1", "q2"]
