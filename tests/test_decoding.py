"""Decoding engine and proxy-tuning: parity with no-cache recomputation and with transformers.

Tiny random Llama models built from configs (no hub); greedy paths compare exact tokens,
logit paths use one tolerance, ATOL.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from lmadapt.decoding import (
    GenerationConfig,
    ModelSource,
    ProxySource,
    SharedLoraProxySource,
    check_tokenizers_match,
    generate,
    sequence_logprobs,
)
from lmadapt.decoding.engine import decode_batch, left_pad
from lmadapt.decoding.sources import split_head
from lmadapt.errors import LmadaptError

ATOL = 1e-4
VOCAB = 128
PROMPTS = ["w1 w2 w3 w4 w5", "w9", "w7 w8 w20"]


def make_tokenizer(words: list[str] | None = None) -> PreTrainedTokenizerFast:
    """Word-level tokenizer: 4 specials + 124 words = 128 tokens."""
    words = words or [f"w{i}" for i in range(VOCAB - 4)]
    vocab = {
        "<pad>": 0,
        "<eos>": 1,
        "<bos>": 2,
        "<unk>": 3,
        **{w: i + 4 for i, w in enumerate(words)},
    }
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
    )


def make_model(
    seed: int, hidden: int = 64, layers: int = 2, vocab: int = VOCAB
) -> LlamaForCausalLM:
    """A tiny random Llama; larger init so greedy choices are far from ties."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=vocab,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        initializer_range=0.2,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run far faster on one thread (no oversubscription on shared CPUs)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tok() -> PreTrainedTokenizerFast:
    return make_tokenizer()


@pytest.fixture(scope="module")
def trio() -> tuple[LlamaForCausalLM, LlamaForCausalLM, LlamaForCausalLM]:
    """(base, expert, anti-expert): a bigger base and two small models."""
    return make_model(0, hidden=64, layers=3), make_model(1, hidden=32), make_model(2, hidden=32)


GREEDY = GenerationConfig(max_new_tokens=10)


@torch.inference_mode()
def reference_proxy_tokens(
    models_: tuple, alpha: float, prompt_ids: list[int], steps: int
) -> list[int]:
    """Proxy greedy decoding the slow way: full forward of every model each step, no cache."""
    base, expert, anti = models_
    ids = torch.tensor([prompt_ids])
    out = []
    for _ in range(steps):
        logits = base(ids).logits[:, -1, :VOCAB] + alpha * (
            expert(ids).logits[:, -1, :VOCAB] - anti(ids).logits[:, -1, :VOCAB]
        )  # (1, V)
        token = int(logits.argmax(-1))
        out.append(token)
        if token == 1:
            break
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    return out


def proxy_tokens(source, tok, prompts: list[str], steps: int = 10) -> list[list[int]]:
    """New tokens per prompt from our engine (batched, left-padded), trimmed after EOS."""
    input_ids, mask = left_pad([tok(p)["input_ids"] for p in prompts], 0)
    new = decode_batch(source, input_ids, mask, GenerationConfig(max_new_tokens=steps), [1], 0)
    rows = []
    for row in new.tolist():
        rows.append(row[: row.index(1) + 1] if 1 in row else row)
    return rows


def test_proxy_greedy_matches_no_cache_reference(tok, trio):
    source = ProxySource(*trio, alpha=1.0, vocab_size=len(tok))
    for prompt, got in zip(PROMPTS, proxy_tokens(source, tok, PROMPTS), strict=True):
        assert got == reference_proxy_tokens(trio, 1.0, tok(prompt)["input_ids"], 10)


def test_proxy_differs_from_base(tok, trio):
    proxy = generate(ProxySource(*trio, alpha=2.0), tok, PROMPTS, GREEDY)
    assert proxy != generate(trio[0], tok, PROMPTS, GREEDY)


def test_expert_equal_anti_expert_is_base(tok, trio):
    base, small, _ = trio
    assert generate(ProxySource(base, small, small), tok, PROMPTS, GREEDY) == generate(
        base, tok, PROMPTS, GREEDY
    )


def test_alpha_zero_is_base(tok, trio):
    input_ids, mask = left_pad([tok(p)["input_ids"] for p in PROMPTS], 0)
    pos = (mask.cumsum(-1) - 1).clamp_min(0)
    proxy = ProxySource(*trio, alpha=0.0)
    plain = ModelSource(trio[0])
    assert torch.equal(proxy.step(input_ids, mask, pos), plain.step(input_ids, mask, pos))
    assert generate(proxy, tok, PROMPTS, GREEDY) == generate(trio[0], tok, PROMPTS, GREEDY)


def test_batched_equals_one_by_one(tok, trio):
    source = ProxySource(*trio, alpha=0.7)
    batched = generate(source, tok, PROMPTS, GREEDY)
    assert batched == [generate(source, tok, [p], GREEDY)[0] for p in PROMPTS]
    assert batched == generate(source, tok, PROMPTS, GREEDY, batch_size=2)


def make_lora(
    small: LlamaForCausalLM, targets: tuple[str, ...] = ("q_proj", "v_proj", "down_proj")
):
    """A peft LoRA on a copy of `small`, with random non-zero B so LoRA changes outputs."""
    from peft import LoraConfig, get_peft_model

    lora_cfg = LoraConfig(r=4, lora_alpha=8, target_modules=list(targets), lora_dropout=0.0)
    peft_model = get_peft_model(copy.deepcopy(small), lora_cfg)
    torch.manual_seed(3)
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.3)
    return peft_model.eval()


@pytest.mark.parametrize("batch_rows", [True, False], ids=["one-2B-row-pass", "two-passes"])
def test_shared_lora_equals_two_models(tok, trio, batch_rows):
    base, small, _ = trio
    lora_model = make_lora(small)
    merged = copy.deepcopy(lora_model).merge_and_unload().eval()
    shared = SharedLoraProxySource(
        base, lora_model, alpha=1.5, vocab_size=len(tok), batch_rows=batch_rows
    )
    two = ProxySource(base, merged, small, alpha=1.5, vocab_size=len(tok))
    input_ids, mask = left_pad([tok(p)["input_ids"] for p in PROMPTS], 0)
    pos = (mask.cumsum(-1) - 1).clamp_min(0)
    with torch.inference_mode():
        assert torch.allclose(
            shared.step(input_ids, mask, pos), two.step(input_ids, mask, pos), atol=ATOL
        )
    assert not torch.allclose(
        merged(input_ids).logits, small(input_ids).logits, atol=1e-2
    )  # LoRA matters
    assert proxy_tokens(shared, tok, PROMPTS) == proxy_tokens(two, tok, PROMPTS)
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in lora_model.modules() if isinstance(m, BaseTunerLayer)]
    assert layers and not any(m.disable_adapters for m in layers)  # LoRA back on afterwards


def test_head_on_difference_is_used_and_exact(tok, trio):
    """Expert and anti-expert sharing an LM head: the head runs once on h+ - h-; logits match
    the two-projection path and greedy tokens match the slow no-cache reference."""
    base, small, _ = trio
    lora_model = make_lora(small)
    merged = copy.deepcopy(lora_model).merge_and_unload().eval()  # head untouched by LoRA
    input_ids, mask = left_pad([tok(p)["input_ids"] for p in PROMPTS], 0)
    pos = (mask.cumsum(-1) - 1).clamp_min(0)
    fast = ProxySource(base, merged, small, alpha=1.5, vocab_size=len(tok))
    slow = ProxySource(
        base, merged, small, alpha=1.5, vocab_size=len(tok), head_on_difference=False
    )
    shared = SharedLoraProxySource(base, lora_model, alpha=1.5, vocab_size=len(tok))
    two_pass = SharedLoraProxySource(base, lora_model, 1.5, len(tok), batch_rows=False)
    shared_slow = SharedLoraProxySource(
        base, lora_model, alpha=1.5, vocab_size=len(tok), head_on_difference=False
    )
    assert fast.head_on_difference and shared.head_on_difference and two_pass.head_on_difference
    assert not slow.head_on_difference and not shared_slow.head_on_difference
    with torch.inference_mode():
        want = slow.step(input_ids, mask, pos, keep=0)
        for source in (fast, shared, two_pass, shared_slow):
            source.reset()
            assert torch.allclose(source.step(input_ids, mask, pos, keep=0), want, atol=ATOL)
    for prompt, got in zip(PROMPTS, proxy_tokens(fast, tok, PROMPTS), strict=True):
        ids = tok(prompt)["input_ids"]
        assert got == reference_proxy_tokens((base, merged, small), 1.5, ids, len(got))
    assert proxy_tokens(shared, tok, PROMPTS) == proxy_tokens(fast, tok, PROMPTS)


def test_head_on_difference_off_when_heads_differ_or_logits_transformed(tok, trio):
    base, expert, anti = trio  # independent random small models: different heads
    assert not ProxySource(base, expert, anti, vocab_size=len(tok)).head_on_difference
    lora_on_head = make_lora(anti, targets=("q_proj", "v_proj", "lm_head"))
    shared = SharedLoraProxySource(base, lora_on_head, vocab_size=len(tok))
    assert not shared.head_on_difference  # LoRA wraps the head: project each row apart
    capped = copy.deepcopy(anti)
    capped.config.final_logit_softcapping = 30.0
    assert split_head(capped) is None

    class Scaled(LlamaForCausalLM):
        """Logits doubled after the head: only the probe forward can see it."""

        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            out.logits = 2 * out.logits
            return out

    scaled = Scaled(anti.config).eval()
    scaled.load_state_dict(anti.state_dict())
    assert split_head(anti) is not None and split_head(scaled) is None


def test_plain_greedy_matches_transformers_generate(tok, trio):
    base = trio[0]
    input_ids, mask = left_pad([tok(p)["input_ids"] for p in PROMPTS], 0)
    with torch.inference_mode():
        theirs = base.generate(
            input_ids=input_ids,
            attention_mask=mask,
            do_sample=False,
            max_new_tokens=10,
            pad_token_id=0,
            eos_token_id=1,
        )[:, input_ids.shape[1] :]
    ours = decode_batch(
        ModelSource(base), input_ids, mask, GenerationConfig(max_new_tokens=10), [1], 0
    )
    assert torch.equal(ours, theirs)


class ScriptedSource:
    """A fake source that emits a fixed token sequence per row (to test EOS bookkeeping)."""

    def __init__(self, scripts: list[list[int]]):
        self.scripts, self.vocab_size, self.eos_token_ids, self.t = scripts, VOCAB, [1], 0

    def reset(self) -> None:
        self.t = 0

    def step(self, input_ids, attention_mask, position_ids, keep=1):
        logits = torch.zeros(len(self.scripts), 1, VOCAB)
        for row, script in enumerate(self.scripts):
            logits[row, 0, script[min(self.t, len(script) - 1)]] = 1.0
        self.t += 1
        return logits


def test_eos_per_row_pads_and_stops_early(tok):
    source = ScriptedSource([[5, 1, 9, 9, 9], [6, 7, 8, 1, 9]])
    input_ids, mask = left_pad([[5], [6, 7]], 0)
    new = decode_batch(source, input_ids, mask, GenerationConfig(max_new_tokens=20), [1], 0)
    assert new.tolist() == [[5, 1, 0, 0], [6, 7, 8, 1]]  # finished rows emit pad; loop ends at 4
    assert generate(source, tok, ["w1", "w2 w3"], GenerationConfig(max_new_tokens=20)) == [
        " w1",
        " w2 w3 w4",
    ]


def test_stop_strings_cut(tok, trio):
    full = generate(trio[0], tok, PROMPTS[:1], GREEDY)[0]
    third = full.split()[2]
    cut = generate(trio[0], tok, PROMPTS[:1], GenerationConfig(max_new_tokens=10, stop=[third]))[0]
    assert cut == full[: full.index(third)]
    assert third not in cut


def test_sampling_is_seeded_and_top_k_one_is_greedy(tok, trio):
    sample = GenerationConfig(max_new_tokens=8, do_sample=True, temperature=0.8, top_p=0.9, seed=7)
    assert generate(trio[0], tok, PROMPTS, sample) == generate(trio[0], tok, PROMPTS, sample)
    top1 = GenerationConfig(max_new_tokens=8, do_sample=True, top_k=1, seed=1)
    assert generate(trio[0], tok, PROMPTS, top1) == generate(
        trio[0], tok, PROMPTS, GenerationConfig(max_new_tokens=8)
    )


@pytest.mark.parametrize(
    "kwargs",
    [{"max_new_tokens": 0}, {"temperature": 0.0}, {"top_k": -1}, {"top_p": 0.0}, {"stop": [""]}],
)
def test_config_validation(kwargs):
    with pytest.raises(LmadaptError):
        GenerationConfig(**kwargs)


def test_vocab_mismatch_names_token(tok):
    words = [f"w{i}" for i in range(VOCAB - 4)]
    words[10] = "zebra"
    with pytest.raises(LmadaptError, match=r"id 14: base has 'w10', expert has 'zebra'") as err:
        check_tokenizers_match(tok, make_tokenizer(words), "expert")
    assert "\n" not in str(err.value)
    check_tokenizers_match(tok, make_tokenizer())  # identical: no error


def test_padded_embedding_rows_are_sliced(tok, trio):
    base = trio[0]
    expert, anti = make_model(4, hidden=32, vocab=136), make_model(5, hidden=32, vocab=136)
    source = ProxySource(base, expert, anti, vocab_size=len(tok))
    input_ids, mask = left_pad([tok(p)["input_ids"] for p in PROMPTS], 0)
    pos = (mask.cumsum(-1) - 1).clamp_min(0)
    with torch.inference_mode():
        got = source.step(input_ids, mask, pos)  # (B, 1, 128)
        want = base(input_ids, attention_mask=mask, position_ids=pos).logits[:, -1:] + (
            expert(input_ids, attention_mask=mask, position_ids=pos).logits[:, -1:, :VOCAB]
            - anti(input_ids, attention_mask=mask, position_ids=pos).logits[:, -1:, :VOCAB]
        )
    assert got.shape == (3, 1, VOCAB) and torch.allclose(got, want, atol=ATOL)
    assert len(generate(source, tok, PROMPTS, GREEDY)) == 3
    with pytest.raises(LmadaptError, match="120 logits but the tokenizer has 128"):
        ProxySource(base, make_model(6, hidden=32, vocab=120), anti, vocab_size=len(tok))


def test_sequence_logprobs_uses_combined_logits(tok, trio):
    source = ProxySource(*trio, alpha=1.0)
    prompts, conts = ["w1 w2 w3", "w4", "w5 w6"], ["w7 w8", "w9", "w10 w11 w12"]
    scores, counts = sequence_logprobs(source, tok, prompts, conts, batch_size=2)
    assert counts.tolist() == [2, 1, 3]
    base, expert, anti = trio
    with torch.inference_mode():
        for prompt, cont, score in zip(prompts, conts, scores, strict=True):
            ids = torch.tensor(
                [tok(prompt)["input_ids"] + tok(cont, add_special_tokens=False)["input_ids"]]
            )
            logits = base(ids).logits + expert(ids).logits - anti(ids).logits  # (1, T, V)
            n = len(cont.split())
            log_probs = torch.log_softmax(logits[0, -n - 1 : -1], dim=-1)  # (n, V)
            want = log_probs.gather(-1, ids[0, -n:, None]).sum()
            assert torch.allclose(score, want, atol=ATOL)


def test_cli_plain_and_proxy(tmp_path, tok, trio):
    from typer.testing import CliRunner

    from lmadapt.decoding.cli import generate_app

    base_dir, small_dir, adapter_dir = tmp_path / "base", tmp_path / "small", tmp_path / "adapter"
    for folder, model in ((base_dir, trio[0]), (small_dir, trio[1])):
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
    lora_model = make_lora(trio[1])
    lora_model.save_pretrained(adapter_dir)
    prompts_file = tmp_path / "prompts.jsonl"
    prompts_file.write_text("\n".join(json.dumps({"prompt": p}) for p in PROMPTS[:2]))
    runner = CliRunner()
    plain = runner.invoke(
        generate_app, [str(base_dir), "--prompts", str(prompts_file), "--max-new-tokens", "5"]
    )
    assert plain.exit_code == 0, plain.output
    assert plain.stdout.splitlines() == generate(
        trio[0], tok, PROMPTS[:2], GenerationConfig(max_new_tokens=5)
    )
    proxy = runner.invoke(
        generate_app,
        [
            str(base_dir),
            "-p",
            PROMPTS[0],
            "--anti-expert",
            str(small_dir),
            "--expert-adapter",
            str(adapter_dir),
            "--max-new-tokens",
            "5",
            "--jsonl",
        ],
    )
    assert proxy.exit_code == 0, proxy.output
    assert json.loads(proxy.stdout)["prompt"] == PROMPTS[0]
    bad = runner.invoke(generate_app, [str(base_dir), "-p", "w1", "--expert", str(small_dir)])
    assert bad.exit_code == 1 and "needs --anti-expert" in bad.output
