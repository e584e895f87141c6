"""Tiny random models and toy data built from configs (no hub), shared by the tests."""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    BertConfig,
    BertModel,
    BertTokenizerFast,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

POSITIVE = ["good", "great", "fine", "lovely", "superb"]
NEGATIVE = ["bad", "awful", "poor", "dull", "boring"]
FILLER = ["the", "a", "movie", "film", "plot", "was", "is", "very", "quite", "and", "acting", "story"]
LABELS = ["positive", "negative", "neutral", "Answer", ":", "\n", "yes", "no"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<s>", "</s>"]
VOCAB = SPECIAL + sorted(set(POSITIVE + NEGATIVE + FILLER + LABELS))


def toy_rows(n: int, seed: int = 0, kind: str = "classification") -> list[dict]:
    """Sentences whose sentiment word decides the label (learnable by every method)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        positive = i % 2 == 0
        words = rng.sample(FILLER, 4) + [rng.choice(POSITIVE if positive else NEGATIVE)]
        rng.shuffle(words)
        text = " ".join(words)
        if kind == "classification":
            rows.append({"text": text, "label": "positive" if positive else "negative"})
        else:
            rows.append({"text": text, "output": "yes" if positive else "no"})
    return rows


def toy_chat_rows(n: int, seed: int = 0) -> list[dict]:
    """toy_rows' generation task as `messages` rows: one user turn and the answer; every third
    row opens with a system message, every fourth with an earlier exchange (multi-turn)."""
    rows = []
    for i, row in enumerate(toy_rows(n, seed, kind="generation")):
        turns = [{"role": "user", "content": row["text"]}, {"role": "assistant", "content": row["output"]}]
        if i % 4 == 1:
            turns = [{"role": "user", "content": "the film"}, {"role": "assistant", "content": "yes"}, *turns]
        if i % 3 == 2:
            turns = [{"role": "system", "content": "Answer yes no"}, *turns]
        rows.append({"messages": turns})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _word_tokenizer(cls: type, vocab: list[str] = VOCAB, **special) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over vocab (splits on whitespace and punctuation)."""
    backend = Tokenizer(models.WordLevel(vocab={tok: i for i, tok in enumerate(vocab)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return cls(tokenizer_object=backend, **special)


def make_bert(folder: Path, seed: int = 0, dropout: float = 0.1) -> Path:
    """A 2-layer BERT (hidden 32) with a word-level tokenizer over VOCAB."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _word_tokenizer(BertTokenizerFast, cls_token="[CLS]", sep_token="[SEP]",
                                mask_token="[MASK]", pad_token="[PAD]", unk_token="[UNK]")
    tokenizer._tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", VOCAB.index("[CLS]")), ("[SEP]", VOCAB.index("[SEP]"))])
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128,
                        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _save_llama(folder: Path, tokenizer: PreTrainedTokenizerFast, vocab: list[str], eos: str, seed: int) -> Path:
    """A 2-layer Llama (hidden 64) over vocab, saved with its tokenizer."""
    folder.mkdir(parents=True, exist_ok=True)
    ids = {tok: i for i, tok in enumerate(vocab)}
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=ids["<s>"], eos_token_id=ids[eos], pad_token_id=ids["[PAD]"],
                         tie_word_embeddings=False)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_llama(folder: Path, seed: int = 0) -> Path:
    """A 2-layer Llama (hidden 64) with a word-level tokenizer over VOCAB."""
    tokenizer = _word_tokenizer(PreTrainedTokenizerFast, bos_token="<s>", eos_token="</s>",
                                pad_token="[PAD]", unk_token="[UNK]")
    return _save_llama(folder, tokenizer, VOCAB, "</s>", seed)


CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
CHAT_VOCAB = VOCAB + ["<|im_start|>", "<|im_end|>", "system", "user", "assistant"]


def make_chat_llama(folder: Path, seed: int = 0) -> Path:
    """make_llama's model with ChatML turns: <|im_start|>/<|im_end|> tokens, a chat template,
    and <|im_end|> as the end-of-sequence token (generation stops at the end of a turn)."""
    tokenizer = _word_tokenizer(PreTrainedTokenizerFast, CHAT_VOCAB, bos_token="<s>", eos_token="<|im_end|>",
                                pad_token="[PAD]", unk_token="[UNK]",
                                additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    tokenizer.chat_template = CHATML
    return _save_llama(folder, tokenizer, CHAT_VOCAB, "<|im_end|>", seed)
