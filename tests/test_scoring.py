"""Parity: our label log-likelihood scoring equals a hand computation from the logits."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lmadapt.models.scoring import classify_by_likelihood, score_continuations


def _hand_logprob(model, tokenizer, prompt: str, continuation: str) -> tuple[float, int]:
    """log p(continuation | prompt) from one unpadded forward pass, token by token."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    cont_ids = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + cont_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]  # (T, V)
    total = 0.0
    for offset, token in enumerate(cont_ids):
        position = len(prompt_ids) + offset  # the token's index; predicted from position - 1
        total += torch.log_softmax(logits[position - 1], dim=-1)[token].item()
    return total, len(cont_ids)


def test_scoring_matches_hand_computation(tiny_llama):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    tokenizer.padding_side = "left"
    prompts = ["the movie was good\nAnswer:", "a dull plot\nAnswer:", "the acting is very quite lovely and the story\nAnswer:"]
    conts = [" positive", " negative neutral", " yes"]
    ours = score_continuations(model, tokenizer, prompts, conts, max_length=64, batch_size=2)
    ours_norm = score_continuations(model, tokenizer, prompts, conts, max_length=64, normalize=True)
    for i, (p, c) in enumerate(zip(prompts, conts, strict=True)):
        expected, n = _hand_logprob(model, tokenizer, p, c)
        assert abs(ours[i].item() - expected) < 1e-4
        assert abs(ours_norm[i].item() - expected / n) < 1e-4


def test_classify_by_likelihood_shape_and_argmax(tiny_llama):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    tokenizer.padding_side = "left"
    labels = ["positive", "negative", "neutral"]
    prompts = ["good film\nAnswer:", "bad film\nAnswer:"]
    scores = classify_by_likelihood(model, tokenizer, prompts, labels, " ", max_length=64)
    assert scores.shape == (2, 3)
    for i, prompt in enumerate(prompts):
        for j, label in enumerate(labels):
            assert abs(scores[i, j].item() - _hand_logprob(model, tokenizer, prompt, " " + label)[0]) < 1e-4


def test_shared_prefix_cache_equals_full_prompts(tiny_llama):
    """ICL's fixed demonstrations scored once through the KV cache == scoring each full prompt."""
    from lmadapt.models.scoring import score_single_tokens, score_single_tokens_after_prefix

    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    tokenizer.padding_side = "left"
    prefix = "the movie was good\nAnswer: positive\n\na dull plot\nAnswer: negative\n\n"
    queries = ["the acting is lovely\nAnswer:", "boring\nAnswer:", "the story was very quite poor and dull\nAnswer:"]
    token_ids = tokenizer(" positive negative", add_special_tokens=False)["input_ids"]
    cached = score_single_tokens_after_prefix(model, tokenizer, prefix, queries, token_ids, 128, batch_size=2)
    full = score_single_tokens(model, tokenizer, [prefix + q for q in queries], token_ids, 128, batch_size=3)
    torch.testing.assert_close(cached, full, rtol=1e-4, atol=1e-4)


def test_icl_cached_path_equals_full_prompt_scoring(tiny_llama, toy_data):
    from pathlib import Path

    from lmadapt.data import DataSpec, load_train_eval
    from lmadapt.methods import get_method
    from lmadapt.methods.base import RunContext
    from lmadapt.models.load import ModelSpec
    from lmadapt.train.config import TrainConfig

    train, evals = load_train_eval(toy_data[0], toy_data[1], DataSpec())
    icl = get_method("icl")
    adapted, _ = icl.fit(train, evals, icl.config_class(shots=3), RunContext(ModelSpec(model=str(tiny_llama)),
                                                                             TrainConfig(), Path(".")))
    tm = adapted.tm
    texts = evals.texts()[:6]
    assert tm.prompt_builder.prefix_is_shared
    full = classify_by_likelihood(tm.model, tm.tokenizer, [tm.prompt(t) for t in texts], train.labels,
                                  train.label_prefix, tm.max_length)
    torch.testing.assert_close(tm.label_scores(texts), full, rtol=1e-4, atol=1e-4)


def test_one_scoring_path_same_scores_for_plain_proxy_and_policy(tiny_llama, tmp_path):
    """`continuation_logprobs` scores a continuation the same through a plain model, a ProxySource
    whose expert equals its anti-expert (Eq. 1 adds exactly 0) and a LoRA policy in train mode
    with DPO's (B, T) loss mask (LoRA B = 0: the policy is the base); all equal the hand
    computation, its thin callers agree, and gradients reach the policy."""
    import copy

    from peft import LoraConfig, get_peft_model

    from lmadapt.decoding import ProxySource, sequence_logprobs
    from lmadapt.decoding.engine import left_pad
    from lmadapt.decoding.scoring import continuation_logprobs, tail_mask
    from lmadapt.methods.rlhf.common import sequence_logps
    from lmadapt.models.scoring import encode_pair
    from tiny import make_llama

    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    small = AutoModelForCausalLM.from_pretrained(make_llama(tmp_path / "small", seed=1)).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    prompts = ["the movie was good\nAnswer:", "a dull plot\nAnswer:", "the acting is very quite lovely\nAnswer:"]
    conts = [" positive", " negative neutral", " yes no yes"]
    rows = [encode_pair(tokenizer, p, c, 64) for p, c in zip(prompts, conts, strict=True)]
    ids, mask = left_pad([r for r, _ in rows], tokenizer.pad_token_id)
    n_cont = [n for _, n in rows]
    score_mask = tail_mask(ids.shape[1], n_cont)
    loss_mask = torch.zeros_like(ids)  # DPO's layout: 1 on the response tokens
    for row, n in enumerate(n_cont):
        loss_mask[row, -n:] = 1
    assert torch.equal(score_mask, loss_mask.bool())

    with torch.no_grad():
        plain = continuation_logprobs(model, ids, mask, score_mask)
        proxy_source = ProxySource(model, small, small, alpha=1.0, vocab_size=len(tokenizer))
        proxy = continuation_logprobs(proxy_source, ids, mask, score_mask)
    policy = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    policy.train()
    with_grad = sequence_logps(policy, ids, mask, loss_mask)

    expected = torch.tensor([_hand_logprob(model, tokenizer, p, c)[0] for p, c in zip(prompts, conts, strict=True)])
    torch.testing.assert_close(plain, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(proxy, plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(with_grad.detach(), plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sequence_logprobs(proxy_source, tokenizer, prompts, conts)[0], plain,
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(score_continuations(model, tokenizer, prompts, conts, max_length=64), plain,
                               rtol=1e-5, atol=1e-5)
    with_grad.sum().backward()
    lora_b = [p.grad for name, p in policy.named_parameters() if "lora_B" in name]
    assert lora_b and all(g is not None and g.abs().sum() > 0 for g in lora_b)
