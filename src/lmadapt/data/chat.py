"""Chat and instruction data: OpenAI-style `messages`, alpaca rows, and how a conversation
becomes a model input.

A chat example keeps the whole conversation (`messages`, for the loss on every assistant turn);
its `text` is the prompt — the conversation before the last assistant turn — and its `target`
that last assistant turn. A prompt of one user turn is that turn's content as plain text (so
`lmadapt predict --text "..."` works on a chat run); a longer one (a system message, earlier
turns) is the JSON list of its messages. `prompt_messages(text)` reads both forms back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from lmadapt.data.task import Example
from lmadapt.errors import LmadaptError

ROLES = ("system", "user", "assistant")
FORMATS = ("auto", "messages", "alpaca", "prompt_completion", "text")
Message = tuple[str, str]  # (role, content)


@dataclass(frozen=True)
class ChatExample(Example):
    """A conversation ending in the assistant turn to learn; `messages` holds every turn."""

    messages: tuple[Message, ...] = ()

    def as_dicts(self) -> list[dict[str, str]]:
        return [{"role": role, "content": content} for role, content in self.messages]


def _message(item: Any, where: str, index: int) -> Message:
    if not isinstance(item, dict):
        raise LmadaptError(f"{where}: messages[{index}] is not an object with role and content")
    role, content = item.get("role"), item.get("content")
    if role not in ROLES:
        raise LmadaptError(f"{where}: messages[{index}] has role {role!r}; use one of {', '.join(ROLES)}")
    if not isinstance(content, str):
        raise LmadaptError(f"{where}: messages[{index}] ({role}) has no text content")
    if not content.strip():
        raise LmadaptError(f"{where}: messages[{index}] ({role}) is empty; fill or drop the turn")
    return role, content


def parse_messages(value: Any, where: str) -> tuple[Message, ...]:
    """A validated conversation: roles system/user/assistant, a system message only first, at
    least one user turn before the last message, which must be the assistant's."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise LmadaptError(f"{where}: field 'messages' is text, not a list of messages") from None
    if not isinstance(value, list) or not value:
        raise LmadaptError(f"{where}: field 'messages' must be a non-empty list of {{role, content}}")
    messages = tuple(_message(item, where, i) for i, item in enumerate(value))
    if any(role == "system" for role, _ in messages[1:]):
        raise LmadaptError(f"{where}: a system message may only come first")
    if messages[-1][0] != "assistant":
        raise LmadaptError(f"{where}: the last message must be the assistant's (the turn to learn); "
                           f"it is {messages[-1][0]!r}")
    if not any(role == "user" for role, _ in messages[:-1]):
        raise LmadaptError(f"{where}: no user turn before the assistant's answer")
    return messages


def prompt_text(messages: tuple[Message, ...]) -> str:
    """The `text` of a conversation's prompt (every message before the last)."""
    prompt = messages[:-1]
    if len(prompt) == 1 and prompt[0][0] == "user":
        return prompt[0][1]
    return json.dumps([{"role": r, "content": c} for r, c in prompt], ensure_ascii=False)


def prompt_messages(text: str) -> list[dict[str, str]]:
    """The messages of a prompt `text`: a JSON list of messages, or one user turn."""
    stripped = text.lstrip()
    if stripped.startswith("[{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, list) and all(isinstance(m, dict) and m.get("role") in ROLES
                                           and isinstance(m.get("content"), str) for m in value):
            return [{"role": m["role"], "content": m["content"]} for m in value]
    return [{"role": "user", "content": text}]


def chat_example(messages: tuple[Message, ...], where: str) -> ChatExample:
    return ChatExample(text=prompt_text(messages), target=messages[-1][1].strip(), source=where,
                       messages=messages)


def alpaca_messages(row: dict, where: str, input_field: str = "instruction",
                    output_field: str = "output") -> tuple[Message, ...]:
    """An alpaca row (instruction, optional input, output; optional system) as a conversation:
    the user turn is the instruction, then a blank line and the input when there is one."""
    def text_of(name: str, required: bool) -> str:
        value = row.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            if required:
                raise LmadaptError(f"{where}: field {name!r} is missing or empty (alpaca rows need "
                                   f"{input_field!r} and {output_field!r})")
            return ""
        if not isinstance(value, str):
            raise LmadaptError(f"{where}: field {name!r} holds a {type(value).__name__}, not text")
        return value

    instruction, extra = text_of(input_field, True), text_of("input", False)
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    system = text_of("system", False)
    turns = ((("system", system),) if system.strip() else ()) + (("user", user), ("assistant", text_of(output_field, True)))
    return turns


def detect_format(row: dict, forced: str, input_field: str, where: str) -> str:
    """The row layout: forced by `--format`, else from the fields present."""
    if forced not in FORMATS:
        raise LmadaptError(f"format must be one of {', '.join(FORMATS)}, got {forced!r}")
    if forced != "auto":
        return forced
    if "messages" in row:
        return "messages"
    if "instruction" in row and "output" in row:
        return "alpaca"
    if "prompt" in row and "completion" in row and input_field not in row:
        return "prompt_completion"
    return "text"
