"""The chat template: conversations as token ids, with the mask of the tokens a model learns.

Each turn is written as::

    <bos> ROLE ":" " " CONTENT <eos>

``<bos>`` opens a turn and the role name follows it (the role tokens), ``<eos>`` ends it (the
end-of-turn token). Both are special tokens every seqlab tokenizer holds at fixed ids, so a
pre-trained run's vocabulary and embedding matrix serve as they are. To ask the model for a
reply, the prompt ends with the header of an assistant turn, ``<bos> assistant:``; the model
writes the content and then ``<eos>``, where generation stops.

The loss mask is true exactly on the assistant's content tokens and its closing ``<eos>``
(learning the end-of-turn token is what makes a reply stop); headers and every other role's
tokens are read but never scored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass

import torch

__all__ = ["ROLES", "ChatTemplate", "best_of_n", "sample_replies", "stream_reply"]

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class ChatTemplate:
    """Turns conversations into ids; ``tokenizer`` is a :class:`seqlab.data.Tokenizer`."""

    tokenizer: object

    @property
    def turn_start_id(self) -> int:
        return self.tokenizer.bos_id

    @property
    def end_of_turn_id(self) -> int:
        return self.tokenizer.eos_id

    def header(self, role: str) -> list[int]:
        """The ids that open a turn of ``role``: ``<bos>`` and the role name."""
        if role not in ROLES:
            raise ValueError(f"role {role!r} is not one of: {', '.join(ROLES)}")
        return [self.turn_start_id] + self.tokenizer.encode(f"{role}:")

    def content(self, text: str) -> list[int]:
        # A leading space keeps word-initial sub-words as the pre-training text has them.
        return self.tokenizer.encode(" " + text.strip())

    def encode(self, messages: list[dict], add_generation_prompt: bool = False
               ) -> tuple[list[int], list[bool]]:
        """(ids, mask) of a conversation: mask true on the assistant's content and end-of-turn.

        ``add_generation_prompt`` appends the header of an assistant turn (for generation).
        """
        ids: list[int] = []
        mask: list[bool] = []
        for message in messages:
            head = self.header(message["role"])
            body = self.content(message["content"]) + [self.end_of_turn_id]
            scored = message["role"] == "assistant"
            ids += head + body
            mask += [False] * len(head) + [scored] * len(body)
        if add_generation_prompt:
            head = self.header("assistant")
            ids += head
            mask += [False] * len(head)
        return ids, mask

    def prompt_and_completion(self, prompt: list[dict], completion: str) -> tuple[list[int], list[int]]:
        """The ids of a conversation ending in an assistant header, and of a reply to it
        (content + end-of-turn): the two halves of a preference pair's sequence."""
        prompt_ids, _ = self.encode(prompt, add_generation_prompt=True)
        return prompt_ids, self.content(completion) + [self.end_of_turn_id]

    def decode_reply(self, ids: list[int]) -> str:
        """The text of generated reply ids (up to the end-of-turn token)."""
        if self.end_of_turn_id in ids:
            ids = ids[: ids.index(self.end_of_turn_id)]
        return self.tokenizer.decode(ids).strip()

    def fit_history(self, messages: list[dict], budget: int) -> list[dict]:
        """The most recent messages whose prompt fits in ``budget`` tokens; a leading system
        message is always kept. Raises ValueError when even the last message does not fit."""
        system = [m for m in messages[:1] if m["role"] == "system"]
        rest = messages[len(system):]
        for start in range(len(rest)):
            kept = system + rest[start:]
            if len(self.encode(kept, add_generation_prompt=True)[0]) <= budget:
                return kept
        raise ValueError(
            f"the last message alone is longer than the {budget} tokens the context leaves for "
            f"it; write a shorter message or lower max_new_tokens"
        )


@torch.no_grad()
def _token_rows(
    model: torch.nn.Module,
    prompt_ids: list[int],
    max_new_tokens: int,
    n: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    generator: torch.Generator | None,
) -> Iterator[torch.Tensor]:
    """Yield the (n,) tokens drawn at each step for n copies of the prompt.

    The prompt is read once, as n equal rows; then each step's tokens are fed alone with the
    carried state (a Transformer's key/value cache, a recurrent network's hidden state), up to
    ``max_new_tokens`` or a Transformer's ``context_length`` (the positions a soft prompt
    leaves). The next forward pass runs only when the next tokens are asked for. The model is in
    eval mode meanwhile and back in its own mode once the iterator is closed.
    """
    from seqlab.decode.sampling import sample_next_token

    # An exported model (onnxruntime) has no parameters and reads CPU tensors.
    device = next(model.parameters()).device if isinstance(model, torch.nn.Module) else "cpu"
    was_training = model.training
    model.eval()
    try:
        state = model.new_cache() if hasattr(model, "new_cache") else None
        limit = getattr(model, "context_length", None)  # None: a recurrent model has no limit
        if limit is not None:
            max_new_tokens = min(max_new_tokens, limit - len(prompt_ids))
        out = model(torch.tensor([prompt_ids] * n, device=device), state=state)
        for step in range(max(max_new_tokens, 0)):
            tokens = sample_next_token(out.logits[:, -1], temperature=temperature, top_k=top_k,
                                       top_p=top_p, generator=generator)  # (n,)
            yield tokens
            if step + 1 < max_new_tokens:
                out = model(tokens[:, None], state=out.state)
    finally:
        model.train(was_training)


def stream_reply(
    model: torch.nn.Module,
    prompt_ids: list[int],
    end_of_turn_id: int,
    max_new_tokens: int,
    temperature: float = 0.7,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    include_end: bool = False,
) -> Iterator[int]:
    """Yield the ids of a reply one at a time, until the end-of-turn token (yielded only with
    ``include_end``) or ``max_new_tokens``.

    The prompt is read once; then each token is fed alone with the carried state (a
    Transformer's key/value cache, a recurrent network's hidden state). A Transformer stops at
    its ``context_length`` (the positions a soft prompt leaves).
    """
    with closing(_token_rows(model, prompt_ids, max_new_tokens, 1, temperature, top_k, top_p,
                             generator)) as rows:
        for tokens in rows:
            token = int(tokens[0])
            if token != end_of_turn_id or include_end:
                yield token
            if token == end_of_turn_id:
                return


def sample_replies(
    model: torch.nn.Module,
    prompt_ids: list[int],
    end_of_turn_id: int,
    max_new_tokens: int,
    n: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    include_end: bool = False,
) -> list[list[int]]:
    """``n`` replies to one prompt, drawn side by side.

    The prompt is read as a batch of ``n`` equal rows, and each step draws ``n`` tokens at once
    with the carried state, so n replies cost one forward pass per token, not n. Each reply
    ends as in :func:`stream_reply` (its end-of-turn token, kept with ``include_end``, or
    ``max_new_tokens``, or a Transformer's context); a row that has ended is still fed, and its
    tokens are dropped, until every row has ended. With n = 1 this is exactly
    :func:`stream_reply`'s draw; for n > 1 the generator is consumed n tokens at a time, so the
    replies differ from n calls of it, with the same distribution.
    """
    if n < 1:
        raise ValueError(f"sample_replies needs n >= 1 replies, got n={n}")
    replies, ended = [[] for _ in range(n)], [False] * n
    with closing(_token_rows(model, prompt_ids, max_new_tokens, n, temperature, top_k, top_p,
                             generator)) as rows:
        for tokens in rows:
            for row, token in enumerate(tokens.tolist()):
                if ended[row]:
                    continue
                ended[row] = token == end_of_turn_id
                if not ended[row] or include_end:
                    replies[row].append(token)
            if all(ended):
                break
    return replies


def best_of_n(
    model: torch.nn.Module,
    prompt_ids: list[int],
    end_of_turn_id: int,
    max_new_tokens: int,
    n: int,
    score: Callable[[list[int], list[list[int]]], torch.Tensor],
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> tuple[list[int], torch.Tensor]:
    """Best-of-n sampling: ``n`` replies to the prompt, drawn side by side by
    :func:`sample_replies` (end-of-turn token included), and the one ``score`` rates highest.

    ``score(prompt_ids, replies)`` returns the (n,) rewards of the replies, e.g. a reward model's
    scores of prompt + reply. Returns (the best reply, the (n,) scores). No weight changes: the
    KL from the sampling model to the best-of-n one is at most log n - (n - 1) / n nats.
    """
    if n < 1:
        raise ValueError(f"best_of_n needs n >= 1 replies to choose from, got n={n}")
    replies = sample_replies(model, prompt_ids, end_of_turn_id, max_new_tokens, n, temperature,
                             top_k, top_p, generator, include_end=True)
    scores = torch.as_tensor(score(prompt_ids, replies), dtype=torch.float).flatten()
    if scores.numel() != n:
        raise ValueError(f"score returned {scores.numel()} values for {n} replies; it should "
                         "return one per reply")
    return replies[int(scores.argmax())], scores
