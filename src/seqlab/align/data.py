"""Reading alignment data: chat / prompt-completion JSONL and preference pairs.

Formats (one JSON object per line, as TRL reads them):

* conversations: ``{"messages": [{"role": "user", "content": ...}, ...]}``;
* prompt / completion: ``{"prompt": ..., "completion": ...}`` (a user turn and its reply);
* preference pairs: ``{"prompt": ..., "chosen": ..., "rejected": ...}``; the prompt may also
  be a list of messages;
* prompts: ``{"prompt": ...}``, or a plain text file with one prompt per line.

Every problem raises :class:`seqlab.data.readers.DataError` naming the file, the line and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from seqlab.align.chat import ROLES
from seqlab.data.readers import DataError, _json_lines

__all__ = ["PreferencePair", "read_conversations", "read_pairs"]


@dataclass
class PreferencePair:
    prompt: list[dict]
    chosen: str
    rejected: str


def _text(path, line, record, key) -> str:
    if key not in record:
        raise DataError(f"{path}, line {line}: no {key!r} field (fields here: {sorted(record)}); "
                        f"each line needs {key!r}")
    value = record[key]
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{path}, line {line}: {key!r} should be a non-empty string, got {value!r:.60}")
    return value


def _messages(path, line, value) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise DataError(f"{path}, line {line}: 'messages' should be a non-empty list of "
                        f'{{"role": ..., "content": ...}} objects')
    messages = []
    for index, message in enumerate(value):
        if not isinstance(message, dict) or message.get("role") not in ROLES or not isinstance(
                message.get("content"), str):
            raise DataError(f"{path}, line {line}: message {index} should be "
                            f'{{"role": one of {", ".join(ROLES)}, "content": text}}, got {message!r:.80}')
        messages.append({"role": message["role"], "content": message["content"]})
    return messages


def _prompt(path, line, record) -> list[dict]:
    if isinstance(record.get("prompt"), list):
        return _messages(path, line, record["prompt"])
    return [{"role": "user", "content": _text(path, line, record, "prompt")}]


def read_conversations(path: str | Path, system: str | None = None) -> list[list[dict]]:
    """Conversations from chat or prompt / completion JSONL; each must have an assistant turn.

    ``system`` prepends a system message to conversations that have none.
    """
    path = Path(path)
    conversations = []
    for line, record in _json_lines(path):
        if "messages" in record:
            messages = _messages(path, line, record["messages"])
        elif "prompt" in record or "completion" in record:
            messages = _prompt(path, line, record) + [
                {"role": "assistant", "content": _text(path, line, record, "completion")}]
        else:
            raise DataError(f"{path}, line {line}: expected 'messages' or 'prompt' and "
                            f"'completion' fields, got {sorted(record)}")
        if not any(m["role"] == "assistant" for m in messages):
            raise DataError(f"{path}, line {line}: the conversation has no assistant turn, so "
                            f"there is nothing to learn from it")
        if system and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": system}] + messages
        conversations.append(messages)
    if not conversations:
        raise DataError(f"{path} holds no examples")
    return conversations


def read_pairs(path: str | Path) -> list[PreferencePair]:
    """Preference pairs from ``{"prompt", "chosen", "rejected"}`` JSONL (TRL's format)."""
    path = Path(path)
    pairs = []
    for line, record in _json_lines(path):
        prompt = _prompt(path, line, record)
        pairs.append(PreferencePair(prompt, _text(path, line, record, "chosen"),
                                    _text(path, line, record, "rejected")))
    if not pairs:
        raise DataError(f"{path} holds no preference pairs")
    return pairs
