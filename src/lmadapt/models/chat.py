"""Chat templates: rendering a conversation with the tokenizer's own template, and the token
mask that makes the training loss cover only the assistant's turns.

The assistant spans come from rendering prefixes of the conversation: turn i spans from the end
of `render(messages[:i], generation prompt)` to the end of `render(messages[:i+1])`, so it holds
the assistant's text and the template's end-of-turn marker (e.g. `<|im_end|>`) — the model
learns where to stop. A template that renders earlier turns differently once later turns follow
(some drop old reasoning) cannot give exact spans: then `train_on=last` is required.
"""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase

from lmadapt.data.task import Task
from lmadapt.errors import LmadaptError

Messages = Sequence[dict[str, str]]


def chat_template_for(tokenizer: PreTrainedTokenizerBase, task: Task, model_ref: str) -> str | None:
    """The template a task's prompts are rendered with; None for the plain prompt template.

    `messages` data on a model without a template is an error naming the setting; alpaca rows on
    such a model fall back to the plain template (instruction, input) with `chat_template=auto`.
    """
    if not task.chat:
        return None
    if task.chat_template != "auto":
        return task.chat_template
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.chat_template
    if task.format == "messages":
        raise LmadaptError(f"chat data needs a chat template and model {model_ref!r} has none; pass "
                           "chat_template=PATH (a jinja file), or chat_template=none for the plain template")
    return None


def render(tokenizer: PreTrainedTokenizerBase, template: str, messages: Messages,
           generation_prompt: bool) -> str:
    try:
        return tokenizer.apply_chat_template(list(messages), chat_template=template, tokenize=False,
                                             add_generation_prompt=generation_prompt)
    except Exception as err:  # jinja raises its own error types (bad template, unsupported role)
        raise LmadaptError(f"the chat template failed on this conversation: {str(err).splitlines()[0][:200]}; "
                           "check the roles, or pass chat_template=PATH") from None


def assistant_spans(tokenizer: PreTrainedTokenizerBase, template: str, messages: Messages,
                    train_on: str = "all") -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans the loss covers (each assistant turn,
    or only the last with train_on="last"), end-of-turn marker included."""
    full = render(tokenizer, template, messages, generation_prompt=False)
    last = len(messages) - 1
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant" or (train_on == "last" and i != last):
            continue
        before = render(tokenizer, template, messages[:i], generation_prompt=True)
        upto = full if i == last else render(tokenizer, template, messages[: i + 1], generation_prompt=False)
        if not (full.startswith(upto) and upto.startswith(before)):
            raise LmadaptError("the chat template renders earlier turns differently once later turns "
                               "follow, so assistant turns cannot be located; use train_on=last")
        spans.append((len(before), len(upto)))
    return full, spans


def encode_with_spans(tokenizer: PreTrainedTokenizerBase, text: str, spans: list[tuple[int, int]],
                      max_length: int) -> tuple[list[int], list[bool]]:
    """Token ids of text (no special tokens added: the template has them) and, per token, whether
    the loss covers it. Longer than max_length: the start is cut (the answer is kept)."""
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        covered = [any(s <= start < e for s, e in spans) for start, _ in enc["offset_mapping"]]
    else:  # no offsets: tokenize the pieces between span edges apart
        edges = sorted({0, len(text), *(p for span in spans for p in span)})
        ids, covered = [], []
        for a, b in zip(edges, edges[1:], strict=False):
            piece = tokenizer(text[a:b], add_special_tokens=False)["input_ids"]
            inside = any(s <= a < e for s, e in spans)
            ids += piece
            covered += [inside] * len(piece)
    return ids[-max_length:], covered[-max_length:]


_PROBE = "lmadapt end-of-turn probe"


def end_of_turn_id(tokenizer: PreTrainedTokenizerBase, template: str) -> int | None:
    """The special token the template puts right after an assistant's text (e.g. `<|im_end|>`,
    `<|eot_id|>`, `<end_of_turn>`): generation stops there as at EOS. None when the template
    puts no special token there (or cannot render a plain conversation)."""
    try:
        text = render(tokenizer, template, [{"role": "user", "content": "hi"},
                                            {"role": "assistant", "content": _PROBE}], generation_prompt=False)
    except LmadaptError:
        return None
    at = text.rfind(_PROBE)
    if at < 0:
        return None
    after = tokenizer(text[at + len(_PROBE):].lstrip(" "), add_special_tokens=False)["input_ids"]
    special = set(tokenizer.all_special_ids) | {i for i, tok in tokenizer.added_tokens_decoder.items() if tok.special}
    return int(after[0]) if after and after[0] in special else None
