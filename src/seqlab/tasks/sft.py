"""Supervised fine-tuning (SFT) of a causal language model on conversations.

The data is chat JSONL (``{"messages": [{"role", "content"}, ...]}``) or prompt / completion
JSONL (``{"prompt", "completion"}``, a user turn and its reply), written out with the chat
template of :class:`seqlab.align.ChatTemplate`: ``<bos> role: content <eos>`` per turn. The
loss is the next-token cross-entropy on the assistant's tokens only, its closing ``<eos>``
included, so the model learns to end its replies:

.. math:: \\mathcal{L} = -\\frac{1}{|A|} \\sum_{t \\in A} \\log p(w_{t+1} \\mid w_{\\le t})

With ``data.packing=true`` whole conversations are packed one after another into rows of
``data.max_length`` + 1 tokens (fewer padding tokens; as in TRL, a packed conversation may attend
to the one before it in its row). With ``model.init_from=RUN`` the pre-trained run's tokenizer
and weights are used (``<bos>`` / ``<eos>`` are in every seqlab vocabulary); without, a tokenizer
is fitted on the conversations and the model starts from scratch.

:class:`ChatModelTask` is the part shared with the `dpo` and `reward-model` tasks: the model
families, the tokenizer, the chat template and chatting with the result.
"""

from __future__ import annotations

import json
import math
import random
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field

from seqlab.schema import ConfigError, StrictModel
from seqlab.tasks import register_task
from seqlab.tasks.base import (
    StepOutput,
    Task,
    eval_batches,
    example_batches,
    mean_metrics,
    require_path,
    split_off,
    spread,
    to_device,
)
from seqlab.tasks.causal_lm import CausalLMModel

__all__ = ["CHAT_TEMPLATE_FILE", "ChatModelTask", "SFTTask", "read_chat_template"]

IGNORE_INDEX = -100
CHAT_TEMPLATE_FILE = "chat_template.json"
TEMPLATE_FORMAT = "seqlab-chat-1"


def read_chat_template(run_dir: str | Path) -> dict:
    """The chat template a run was tuned with; ValueError for a run never tuned for chat."""
    path = Path(run_dir) / CHAT_TEMPLATE_FILE
    if not Path(run_dir).is_dir():
        raise ValueError(f"run directory {run_dir} does not exist")
    if not path.is_file():
        raise ValueError(
            f"{run_dir} was not fine-tuned for chat: it has no {CHAT_TEMPLATE_FILE}, so the model "
            f"never learned the end-of-turn token <eos> and would not stop; fine-tune it first "
            f"with `seqlab train sft data.train=CHATS.jsonl model.init_from={run_dir}`"
        )
    return json.loads(path.read_text(encoding="utf-8"))


class ChatData(StrictModel):
    train: str | None = None
    valid: str | None = None
    valid_fraction: float = Field(0.05, gt=0, lt=0.5)
    # A system message put in front of every conversation that has none.
    system: str | None = None
    # Tokens the model reads at most (prompt + answer); a Transformer's positions bound it.
    max_length: int = Field(256, ge=8)
    # Only without model.init_from: the vocabulary fitted on the data.
    tokenizer: Literal["char", "word", "bpe"] = "char"
    bpe_vocab_size: int = Field(4000, ge=16)


class SFTData(ChatData):
    packing: bool = False


class ChatPredict(StrictModel):
    max_new_tokens: int = Field(128, ge=1)
    temperature: float = Field(0.7, ge=0)
    top_k: int | None = Field(None, ge=1)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int = 0
    system: str | None = None
    num_samples: int = Field(3, ge=0)


def build_language_model(model: CausalLMModel, vocab_size: int, max_length: int) -> torch.nn.Module:
    """A TransformerLM or a recurrent LanguageModel from the `model.*` keys."""
    from seqlab.models import LanguageModel, TransformerLM

    if model.family == "recurrent":
        m = model.recurrent
        return LanguageModel(vocab_size=vocab_size, embedding_dim=m.embedding_dim,
                             tie_weights=m.tie_weights, **m.cell_options())
    m = model.transformer
    if m.max_length < max_length:
        raise ConfigError(
            f"data.max_length={max_length} is more than model.transformer.max_length="
            f"{m.max_length}, the positions the model has; lower data.max_length"
        )
    return TransformerLM(
        vocab_size, d_model=m.d_model, nhead=m.nhead, num_layers=m.num_layers,
        dim_feedforward=m.dim_feedforward, dropout=m.dropout, activation=m.activation,
        positional=m.positional, max_length=m.max_length, tie_weights=m.tie_weights, bias=m.bias,
    )


def pad_rows(rows: list[list[int]], value: int) -> torch.Tensor:
    """(N, longest) long tensor, rows right-padded with ``value``."""
    width = max(len(row) for row in rows)
    return torch.tensor([row + [value] * (width - len(row)) for row in rows], dtype=torch.long)


class ChatModelTask(Task):
    """The model, tokenizer and chat template of the tasks that tune a chat model."""

    ModelConfig = CausalLMModel
    PredictConfig = ChatPredict
    tokenizer = None
    chats = True  # `seqlab chat` can talk to its runs

    @property
    def template(self):
        from seqlab.align import ChatTemplate

        return ChatTemplate(self.tokenizer)

    def _fit_tokenizer(self, texts: list[str]) -> None:
        from seqlab.align import ROLES
        from seqlab.data.tokenizers import Tokenizer

        data = self.data
        # The role names are part of every turn's header.
        texts = texts + [f"{role}:" for role in ROLES]
        self.tokenizer = self.fit_tokenizer(lambda: Tokenizer.train(
            texts, kind=data.tokenizer, vocab_size=data.bpe_vocab_size))

    def save_artifacts(self, run_dir: Path) -> None:
        self.tokenizer.save(run_dir / "tokenizer.json")
        template = {"format": TEMPLATE_FORMAT, "turn_start": "<bos>", "end_of_turn": "<eos>",
                    "header": "{role}:", "max_length": self.data.max_length}
        (run_dir / CHAT_TEMPLATE_FILE).write_text(json.dumps(template, indent=1) + "\n", encoding="utf-8")

    def load_artifacts(self, run_dir: Path) -> None:
        from seqlab.data.tokenizers import Tokenizer

        self.tokenizer = Tokenizer.load(run_dir / "tokenizer.json")

    def build_model(self) -> torch.nn.Module:
        return build_language_model(self.model_config, self.tokenizer.vocab_size, self.data.max_length)

    def context_length(self, model: torch.nn.Module) -> int:
        return getattr(model, "context_length", None) or self.data.max_length

    def reply_pieces(self, model, messages: list[dict], generator=None, *,
                     max_new_tokens: int | None = None, temperature: float | None = None,
                     top_k: int | None = None, top_p: float | None = None) -> Iterator[str]:
        """The model's answer to a conversation as pieces of text, each yielded as soon as its
        tokens are drawn; the pieces join to the whole reply. The history is trimmed to fit the
        context. Sampling settings left out are the run's ``predict.*``."""
        from seqlab.align import stream_reply

        p = self.predict_config
        max_new_tokens = p.max_new_tokens if max_new_tokens is None else max_new_tokens
        template = self.template
        model = getattr(model, "language_model", model)  # a PPO run's policy holds a value head
        context = self.context_length(model)
        # The history keeps at least a quarter of the context (or max_new_tokens) for the reply.
        budget = context - max(1, min(max_new_tokens, context // 4))
        prompt = template.encode(template.fit_history(messages, budget), add_generation_prompt=True)[0]
        ids: list[int] = []
        shown = ""
        for token in stream_reply(
            model, prompt, template.end_of_turn_id, min(max_new_tokens, context - len(prompt)),
            temperature=p.temperature if temperature is None else temperature,
            top_k=p.top_k if top_k is None else top_k, top_p=p.top_p if top_p is None else top_p,
            generator=generator,
        ):
            ids.append(token)
            # Decoding the whole reply each time keeps merged pieces intact; a character whose
            # bytes are not all drawn yet (U+FFFD so far) waits for the next token.
            text = template.decode_reply(ids).rstrip("\ufffd")
            if len(text) > len(shown) and text.startswith(shown):
                yield text[len(shown):]
                shown = text
        reply = template.decode_reply(ids)
        if len(reply) > len(shown) and reply.startswith(shown):
            yield reply[len(shown):]

    def reply(self, model, messages: list[dict], device=None, generator=None) -> str:
        """The model's whole answer to a conversation (see :meth:`reply_pieces`)."""
        return "".join(self.reply_pieces(model, messages, generator))

    def _conversation(self, text: str) -> list[dict]:
        system = self.predict_config.system or self.data.system
        return ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": text}]

    def predict(self, model, inputs, device):
        """One reply per input line, each line a user message."""
        model.eval()
        generator = torch.Generator(device=device).manual_seed(self.predict_config.seed)
        return [self.reply(model, self._conversation(text), device, generator) for text in inputs]

    def sample_prompts(self) -> list[list[dict]]:
        """A few conversations from the validation split, up to their first assistant turn."""
        return []

    def report(self, model, device):
        p = self.predict_config
        prompts = self.sample_prompts()[: p.num_samples]
        if not prompts:
            return []
        generator = torch.Generator(device=device).manual_seed(p.seed)
        lines = [f"{len(prompts)} replies to validation prompts (temperature {p.temperature}):"]
        for messages in prompts:
            lines.append(f"--- user: {messages[-1]['content']}")
            try:
                lines.append(f"    model: {self.reply(model, messages, device, generator)}")
            except ValueError as exc:
                lines.append(f"    (no reply: {exc})")
        return lines


@register_task
class SFTTask(ChatModelTask):
    name = "sft"
    summary = "supervised fine-tuning on chat or prompt/completion JSONL (loss on the answers)"
    DataConfig = SFTData
    unit = "tok"

    def prepare(self, fit_vocab: bool = True) -> None:
        from seqlab.align.data import read_conversations
        from seqlab.data.readers import DataError

        data = self.data
        path = require_path(data.train, "data.train", self.recipe, "chat or prompt/completion JSONL")
        examples = read_conversations(path, data.system)
        # (file, 1-based example numbers) of each split, for the messages below
        if data.valid:
            valid_examples = read_conversations(data.valid, data.system)
            sources = {"train": (path, range(1, len(examples) + 1)),
                       "valid": (data.valid, range(1, len(valid_examples) + 1))}
        else:
            kept, held = split_off(list(range(len(examples))), data.valid_fraction, self.seed)
            valid_examples = [examples[i] for i in held]
            examples = [examples[i] for i in kept]
            sources = {"train": (path, [i + 1 for i in kept]), "valid": (path, [i + 1 for i in held])}
        self.conversations = {"train": examples, "valid": valid_examples}
        if fit_vocab:
            self._fit_tokenizer([m["content"] for c in examples for m in c])
        self.examples, truncated = {}, 0
        for split, conversations in self.conversations.items():
            encoded = []
            source, numbers = sources[split]
            for number, messages in zip(numbers, conversations):
                ids, mask = self.template.encode(messages)
                prompt = mask.index(True)
                if prompt >= data.max_length:
                    raise DataError(
                        f"{source}: example {number} has a prompt of {prompt} tokens before its "
                        f"first answer, longer than the context data.max_length={data.max_length}; "
                        f"shorten it or raise data.max_length"
                    )
                if len(ids) > data.max_length + 1:
                    ids, mask = ids[: data.max_length + 1], mask[: data.max_length + 1]
                    truncated += 1
                encoded.append((ids, mask))
            self.examples[split] = encoded
        if truncated:
            warnings.warn(f"{truncated} conversations are longer than data.max_length="
                          f"{data.max_length} tokens and were cut (their last answer loses its end "
                          f"of turn)", UserWarning, stacklevel=2)

    def splits(self):
        return ["valid"] if self.examples.get("valid") else []

    def _packed_rows(self, epoch: int) -> list[list[int]]:
        """Rows of whole conversations, in a seeded order, each at most max_length + 1 tokens."""
        order = list(range(len(self.examples["train"])))
        random.Random(self.seed * 1000003 + epoch).shuffle(order)
        rows, row, size = [], [], 0
        for index in order:
            length = len(self.examples["train"][index][0])
            if row and size + length > self.data.max_length + 1:
                rows.append(row)
                row, size = [], 0
            row.append(index)
            size += length
        return rows + ([row] if row else [])

    def train_batches(self, epoch, batch_size, rank=0, world_size=1):
        from seqlab.tasks.base import shard_batches

        if self.data.packing:
            rows = self._packed_rows(epoch)
            batches = [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]
            return shard_batches(batches, rank, world_size)
        lengths = [len(ids) for ids, _ in self.examples["train"]]
        batches = example_batches(lengths, batch_size, self.seed, epoch, rank, world_size)
        return [[[index] for index in batch] for batch in batches]

    def _collate(self, split: str, rows: list[list[int]]) -> dict[str, torch.Tensor]:
        """inputs (N, L) and targets (N, L): the next tokens where they are scored, else -100."""
        inputs, targets = [], []
        for row in rows:
            ids, mask = [], []
            for index in row:
                ids += self.examples[split][index][0]
                mask += self.examples[split][index][1]
            ids, mask = ids[: self.data.max_length + 1], mask[: self.data.max_length + 1]
            inputs.append(ids[:-1])
            targets.append([t if m else IGNORE_INDEX for t, m in zip(ids[1:], mask[1:])])
        return {"inputs": pad_rows(inputs, self.tokenizer.pad_id), "targets": pad_rows(targets, IGNORE_INDEX)}

    def collate(self, key):
        return self._collate("train", key)

    def training_step(self, model, batch, carry):
        from seqlab.objectives import causal_lm_loss

        logits = model(batch["inputs"]).logits  # (N, L, V)
        loss = causal_lm_loss(logits, batch["targets"], IGNORE_INDEX)
        return StepOutput(loss, int((batch["targets"] != IGNORE_INDEX).sum()))

    @torch.no_grad()
    def evaluate(self, model, split, batch_size, device, max_batches=None):
        """Answer-token loss, perplexity, accuracy, and how often the end of turn is predicted
        where a reply ends (argmax = ``<eos>``)."""
        model.eval()
        examples = self.examples[split]
        totals = {"loss": 0.0, "accuracy": 0.0}
        count, ends, ends_right = 0, 0, 0
        for batch in spread(eval_batches([len(ids) for ids, _ in examples], batch_size), max_batches):
            tensors = to_device(self._collate(split, [[index] for index in batch]), device)
            logits = model(tensors["inputs"]).logits  # (N, L, V)
            targets = tensors["targets"]
            scored = targets != IGNORE_INDEX
            losses = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1),
                ignore_index=IGNORE_INDEX, reduction="sum")
            predicted = logits.argmax(-1)
            totals["loss"] += float(losses)
            totals["accuracy"] += float(((predicted == targets) & scored).sum())
            count += int(scored.sum())
            at_end = targets == self.tokenizer.eos_id
            ends += int(at_end.sum())
            ends_right += int((at_end & (predicted == targets)).sum())
        metrics = mean_metrics(totals, count)
        metrics["perplexity"] = math.exp(min(metrics["loss"], 50.0))
        metrics["end_of_turn_accuracy"] = ends_right / ends if ends else math.nan
        return metrics

    def sample_prompts(self):
        prompts = []
        for messages in self.conversations.get("valid", []):
            first = next(i for i, m in enumerate(messages) if m["role"] == "assistant")
            prompts.append(messages[:first])
        return prompts
