"""Methods on generation tasks (issue 13, item 4) beyond the common matrix: icl and rag on chat
data (demonstrations as earlier turns, context in the user turn), peft prompt learning decoding
with a KV cache as its uncached forward does, proxy with one chat template for its three models,
and compare skipping a method that cannot serve the task."""

from __future__ import annotations

import json

import pytest
import torch
from peft import TaskType, get_peft_model
from transformers import AutoTokenizer

from lmadapt.data import DataSpec, load_task, load_train_eval
from lmadapt.data.chat import prompt_messages
from lmadapt.decoding import GenerationConfig, generate, sequence_logprobs
from lmadapt.decoding.engine import position_ids_for
from lmadapt.methods import get_method
from lmadapt.methods.base import RunContext
from lmadapt.methods.peft_common.build import install_prompt_hooks, peft_config_for
from lmadapt.models.load import ModelSpec
from lmadapt.models.task_model import build_task_model
from lmadapt.train.config import TrainConfig
from tiny import CHATML, toy_chat_rows, toy_rows, write_jsonl

TRAIN = TrainConfig(epochs=1, batch_size=8, lr=3e-3, eval_each_epoch=False, warmup_ratio=0.0, max_new_tokens=4)


@pytest.fixture(scope="module")
def chat_tasks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("chat")
    return load_train_eval(write_jsonl(folder / "train.jsonl", toy_chat_rows(32, seed=1)),
                           write_jsonl(folder / "eval.jsonl", toy_chat_rows(8, seed=2)), DataSpec())


def _system_first(rows: list) -> tuple[str, list[dict]]:
    """An eval text whose prompt has a system message and an earlier exchange, and its messages."""
    for text in rows:
        messages = prompt_messages(text)
        if messages[0]["role"] == "system" and len(messages) > 2:
            return text, messages
    raise AssertionError("toy_chat_rows has no multi-turn row with a system message")


def test_icl_on_chat_data_gives_demonstrations_as_earlier_turns(tiny_chat_llama, chat_tasks, tmp_path):
    train, evals = chat_tasks
    spec = ModelSpec(model=str(tiny_chat_llama))
    adapted, _ = get_method("icl").fit(train, None, get_method("icl").config_class(shots=2),
                                       RunContext(spec, TRAIN, tmp_path))
    tm, demos = adapted.tm, adapted.tm.prompt_builder.fixed
    text, messages = _system_first(evals.texts())
    exchanges = [[*(m for m in prompt_messages(ex.text) if m["role"] != "system"),
                  {"role": "assistant", "content": ex.target}] for ex in demos]
    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_llama)

    def rendered(shown: list[list[dict]]) -> str:  # system message, demonstrations, the query's turns
        turns = [m for exchange in shown for m in exchange]
        return tokenizer.apply_chat_template([messages[0], *turns, *messages[1:]], tokenize=False,
                                             add_generation_prompt=True)

    assert len(demos) == 2 and tm.prompt(text) == rendered(exchanges)
    # a budget for one demonstration: the most similar (the last) is kept, the query is never cut
    tm.prompt_builder.budget = len(tokenizer(rendered(exchanges[-1:]), add_special_tokens=False)["input_ids"])
    assert tm.prompt(text) == rendered(exchanges[-1:])
    tm.prompt_builder.budget = 1
    assert tm.prompt(text) == rendered([])


def test_rag_on_chat_data_puts_the_context_in_the_user_turn(tiny_chat_llama, chat_tasks, tmp_path):
    train, evals = chat_tasks
    cfg = get_method("rag").config_class(rag_embedder="", rag_k=2)
    adapted, _ = get_method("rag").fit(train, None, cfg, RunContext(ModelSpec(model=str(tiny_chat_llama)),
                                                                    TRAIN, tmp_path))
    text, messages = _system_first(evals.texts())
    chunks = [hit.text for hit in adapted.prompter.retriever.hits([text])[0]]
    assert len(chunks) == 2 and "[" not in "".join(chunks)  # chunks show turns' text, not JSON
    shown = [*messages[:-1], {"role": "user", "content": "Context:\n" + "\n".join(chunks) + "\n\n"
                              + messages[-1]["content"]}]
    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_llama)
    assert adapted.tm.prompt(text) == tokenizer.apply_chat_template(shown, tokenize=False, add_generation_prompt=True)
    assert adapted.figures(evals)["mean_chunks_in_prompt"] == 2.0


def _greedy_uncached(tm, prompt: str, n: int) -> str:
    """Greedy decoding by a full forward over the whole sequence at every step (no KV cache)."""
    ids, new = tm.tokenizer(prompt)["input_ids"], []
    for _ in range(n):
        x = torch.tensor([ids + new])
        with torch.inference_mode():
            logits = tm.model(input_ids=x, attention_mask=torch.ones_like(x),
                              position_ids=position_ids_for(torch.ones_like(x))).logits
        token = int(logits[0, -1].argmax())
        if token == tm.tokenizer.eos_token_id:
            break
        new.append(token)
    return tm.tokenizer.decode(new, skip_special_tokens=True).strip()


@pytest.mark.parametrize("method", ["prompt", "ptuning", "prefix"])
def test_prompt_learning_decodes_with_a_cache_as_without(method, tiny_llama, tmp_path):
    """Virtual tokens / prefix key-values enter once: batched cached generation (the task
    model's and the decoding engine's) and continuation scores equal the uncached forward."""
    rows = [{"text": " ".join(r["text"].split()[: 1 + i % 5]), "output": r["output"]}
            for i, r in enumerate(toy_rows(8, seed=3, kind="generation"))]  # 1-5 words: padding
    task = load_task(write_jsonl(tmp_path / "g.jsonl", rows))
    tm = build_task_model(ModelSpec(model=str(tiny_llama)), task, max_new_tokens=5)
    impl = get_method(method)
    torch.manual_seed(0)  # the untrained virtual tokens / prefix
    tm.model = get_peft_model(tm.model, peft_config_for(tm, lambda t, kind: impl.peft_config(
        impl.config_class(), t, TaskType.CAUSAL_LM))).eval()
    install_prompt_hooks(tm.model, tm.kind)
    texts = task.texts()
    prompts = [tm.prompt(t) for t in texts]
    expected = [_greedy_uncached(tm, p, 5) for p in prompts]
    assert any(expected), "the untrained prompt should make the tiny model say something"
    assert tm.predict(texts, batch_size=8) == expected
    engine = generate(tm.model, tm.tokenizer, prompts, GenerationConfig(max_new_tokens=5), batch_size=8)
    assert [t.strip() for t in engine] == expected
    targets = task.targets()
    cached = sequence_logprobs(tm.model, tm.tokenizer, prompts, targets)[0]
    for prompt, target, score in zip(prompts, targets, cached, strict=True):
        ids = tm.tokenizer(prompt)["input_ids"]
        target_ids = tm.tokenizer(target, add_special_tokens=False)["input_ids"]
        x = torch.tensor([ids + target_ids])
        with torch.inference_mode():
            logits = tm.model(input_ids=x, attention_mask=torch.ones_like(x)).logits[0].log_softmax(-1)
        alone = sum(float(logits[len(ids) - 1 + k, tok]) for k, tok in enumerate(target_ids))
        assert float(score) == pytest.approx(alone, abs=1e-4)


@pytest.fixture(scope="module")
def small_chat_llama(tiny_chat_llama, tmp_path_factory):
    """A 1-layer llama with the chat llama's tokenizer but a chat template of its own."""
    from test_proxy_method import make_small_llama

    folder = make_small_llama(tmp_path_factory.mktemp("small_chat"), tiny_chat_llama)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    own = CHATML.replace("{{ m['content'] }}", "Answer : {{ m['content'] }}")
    if "chat_template" in config:
        config["chat_template"] = own
        config_path.write_text(json.dumps(config))
    else:
        (folder / "chat_template.jinja").write_text(own)
    assert AutoTokenizer.from_pretrained(folder).chat_template == own
    return folder


def test_proxy_on_chat_data_renders_with_the_base_template(tiny_chat_llama, small_chat_llama, chat_tasks, tmp_path):
    train, evals = chat_tasks
    spec = ModelSpec(model=str(tiny_chat_llama))
    proxy = get_method("proxy")
    cfg = proxy.config_class(proxy_small=str(small_chat_llama), proxy_report_parts=False)
    adapted, _ = proxy.fit(train, evals, cfg, RunContext(spec, TRAIN, tmp_path))
    assert adapted.base.chat_template == CHATML and adapted.tm.chat_template == CHATML  # not the small one's
    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_llama)
    text, messages = _system_first(evals.texts())
    assert adapted.base.prompt(text) == tokenizer.apply_chat_template(messages, tokenize=False,
                                                                      add_generation_prompt=True)
    texts = evals.texts()
    steered = generate(adapted.source, tokenizer, [adapted.base.prompt(t) for t in texts],
                       GenerationConfig(max_new_tokens=TRAIN.max_new_tokens))
    assert adapted.predict(texts) == [t.strip() for t in steered]
    # alpha = 0: the base alone, as the plain zero-shot model generates it
    cfg0 = proxy.config_class(proxy_small=str(small_chat_llama), proxy_alpha=0.0, proxy_report_parts=False)
    alone, _ = proxy.fit(train, None, cfg0, RunContext(spec, TRAIN, tmp_path / "zero"))
    base = get_method("zero-shot").fit(train, None, get_method("zero-shot").config_class(),
                                       RunContext(spec, TRAIN, tmp_path / "base"))[0]
    assert alone.predict(texts) == base.predict(texts)


def test_compare_skips_a_method_that_cannot_serve_the_task(tiny_llama, tiny_bert, tmp_path, run_cli):
    gen = write_jsonl(tmp_path / "gen.jsonl", toy_rows(24, seed=1, kind="generation"))
    out = tmp_path / "cmp"
    code, err = run_cli(["compare", "--methods", "features,zero-shot", "--model", tiny_llama, "--train", gen,
                         "--out", out, "max_new_tokens=2"])
    assert code == 0, err[-2000:]
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["method"] for r in results] == ["zero-shot"]
    reason = "needs a classification task, not a generation task"
    assert [line for line in err.splitlines() if "skipped" in line] == [f"features skipped: {reason}"]
    report = (out / "report.md").read_text()
    assert f"## Skipped\n\n- `features`: {reason}\n" in report and "Failures" not in report
    assert not (out / "runs" / "features").exists()  # never run
    # an encoder cannot generate: skipped too; nothing left to run is one line
    code, err = run_cli(["compare", "--methods", "head", "--model", tiny_bert, "--train", gen,
                         "--out", tmp_path / "enc"])
    assert code == 2 and err.strip().splitlines()[-1].startswith("error: no method ran: `head`: cannot use model")
    assert "it is an encoder and cannot generate" in err and not (tmp_path / "enc").exists()


def test_proxy_engine_prompts_carry_one_bos(tiny_chat_llama):
    """The decoding engine tokenizes with the tokenizer's special tokens; a template that writes
    the BOS itself loses its own copy there, as the task model tokenizes chat prompts without them."""
    from types import SimpleNamespace

    from tokenizers import processors

    from lmadapt.methods.proxy.method import engine_prompts

    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_llama)
    tm = SimpleNamespace(tokenizer=tokenizer, chat_template=CHATML, prompt=lambda text: "<s>" + text)
    assert engine_prompts(tm, ["good film"]) == ["<s>good film"]  # this tokenizer adds no BOS
    tokenizer._tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tokenizer.bos_token_id)])
    assert tokenizer("good film")["input_ids"][0] == tokenizer.bos_token_id
    assert engine_prompts(tm, ["good film"]) == ["good film"]
    assert tokenizer(engine_prompts(tm, ["good film"])[0])["input_ids"] == tokenizer(
        "<s>good film", add_special_tokens=False)["input_ids"]
    tm.chat_template = None  # plain prompts keep whatever they hold
    assert engine_prompts(tm, ["good film"]) == ["<s>good film"]
