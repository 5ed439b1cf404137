"""A served model: a run directory (torch) or an export directory (onnxruntime) behind one API.

``predict(inputs)`` gives exactly the lines ``seqlab predict`` prints (it is the task's own
``predict``); ``probabilities(inputs)`` the class distribution of a classifier; ``stream(...)``
a language model's continuation one piece of text at a time, drawing the same tokens as the
model's ``generate`` with the same seed.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

__all__ = ["ServedModel", "load_model", "stream_tokens"]

KINDS = {"lm": "generate", "lm-transformer": "generate", "translate": "translate",
         "translate-transformer": "translate", "classify": "classify",
         "classify-transformer": "classify", "tag": "tag"}


@dataclass
class ServedModel:
    name: str
    directory: Path
    task: object
    model: object
    source: str  # "run" or "onnx"
    quantized: bool = False
    forward_passes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def kind(self) -> str:
        """What the page and the API offer: chat, generate, translate, classify, tag or predict."""
        if getattr(self.task, "chats", False):
            return "chat"
        return KINDS.get(self.task.name, "predict")

    @property
    def labels(self) -> list[str] | None:
        vocab = getattr(self.task, "labels", None) or getattr(self.task, "tags", None)
        return None if vocab is None else [vocab.decode(i) for i in range(len(vocab))]

    def describe(self) -> dict:
        return {"name": self.name, "task": self.task.name, "kind": self.kind,
                "source": self.source, "quantized": self.quantized, "labels": self.labels,
                "max_length": self.max_input_tokens}

    @property
    def max_input_tokens(self) -> int | None:
        """The most tokens an input may hold (longer ones are refused), None when unbounded."""
        config = self.task.model_config
        limit = getattr(config, "max_source_length", None)
        if self.kind == "generate":
            limit = None  # a Transformer slides its window; a recurrent model has no limit
        return limit

    def count_tokens(self, text: str) -> int:
        tokenizer = getattr(self.task, "tokenizer", None)
        return len(text.split()) if tokenizer is None else len(tokenizer.encode(text))

    def predict(self, inputs: list[str]) -> list[str]:
        """One output line per input, as `seqlab predict` prints it (one forward pass or search)."""
        with self.lock, torch.no_grad():
            self.forward_passes += 1
            return self.task.predict(self.model, inputs, torch.device("cpu"))

    def probabilities(self, inputs: list[str]) -> list[dict[str, float]]:
        """A classifier's probability for every label, per input (the predict path's encoding)."""
        from seqlab.data.batching import pad_sequences

        task = self.task
        tokenizer = task.tokenizer
        ids = [tokenizer.encode(text)[: task.data.max_length] or [tokenizer.unk_id]
               for text in inputs]
        padded, lengths = pad_sequences(ids, pad_value=tokenizer.pad_id)
        with self.lock, torch.no_grad():
            self.forward_passes += 1
            logits = self.model(padded, lengths=lengths).logits.float()
        labels = self.labels
        return [{label: round(float(p), 6) for label, p in zip(labels, row)}
                for row in logits.softmax(-1)]

    def attention(self, text: str) -> dict | None:
        """The attention of greedy decoding over the source: which source tokens each output
        token read. A recurrent decoder reports its weights at each step; for a Transformer,
        the greedy output is read again in one teacher-forced pass, and the map is its last
        decoder layer's cross-attention averaged over the heads. None for a model that gives
        neither (an exported Transformer)."""
        from seqlab.models import TransformerSeq2Seq

        task = self.task
        tokenizer = task.tokenizer
        ids = task.source_ids(text)
        cap = max(1, math.ceil(task.predict_config.max_length_ratio * len(ids)))
        src, lengths = torch.tensor([ids]), torch.tensor([len(ids)])
        note = "attention of greedy decoding"
        with self.lock, torch.no_grad():
            self.forward_passes += 1
            memory = self.model.encode(src, lengths)
            state = self.model.init_state(memory)
            prev = torch.tensor([tokenizer.bos_id])
            tokens, rows, outputs = [tokenizer.bos_id], [], []
            for _ in range(cap):
                log_probs, state, weights = self.model.step(prev, state, memory)
                prev = log_probs.argmax(-1)  # (1,)
                tokens.append(int(prev))
                if weights is not None:
                    rows.append([round(float(w), 4) for w in weights[0]])
                if int(prev) == tokenizer.eos_id:
                    outputs.append("</s>")
                    break
                outputs.append(tokenizer.id_to_token(int(prev)))
            if len(rows) < len(outputs):  # the steps report no weights
                if not isinstance(self.model, TransformerSeq2Seq):
                    return None
                maps = self.model(src, lengths, torch.tensor([tokens]), return_attentions=True)
                rows = [[round(float(w), 4) for w in row] for row in maps.attentions[0]]
                note = ("last decoder layer's cross-attention, averaged over the heads, "
                        "reading the greedy output")
        return {"source": [task.source_tokenizer.id_to_token(i) for i in ids], "output": outputs,
                "weights": rows, "note": note}

    def stream(self, prompt: str, max_new_tokens: int, temperature: float, top_k: int | None,
               top_p: float | None, seed: int) -> Iterator[str]:
        """The continuation of `prompt` as text pieces (one per token, possibly empty)."""
        tokenizer = self.task.tokenizer
        ids = tokenizer.encode(prompt) or tokenizer.encode("\n") or [tokenizer.unk_id]
        generator = torch.Generator().manual_seed(seed)
        new: list[int] = []
        text = ""
        # No lock across yields: the server runs every step of a model on one worker thread.
        tokens = stream_tokens(self.model, torch.tensor([ids]), max_new_tokens, temperature,
                               top_k, top_p, generator)
        while True:
            with torch.no_grad():
                token = next(tokens, None)
            if token is None:
                return
            self.forward_passes += 1
            new.append(int(token[0]))
            # Decode everything so far: a byte-level token may complete a character only
            # together with the next one.
            full = tokenizer.decode(new)
            piece, text = full[len(text):], full
            yield piece

    def chat(self, messages: list[dict], max_new_tokens: int, temperature: float,
             top_k: int | None, top_p: float | None, seed: int) -> Iterator[str]:
        """A chat model's reply to `messages` as text pieces (the history trimmed to fit its
        context; ValueError, at the first piece, when the last message alone does not fit)."""
        generator = torch.Generator().manual_seed(seed)
        pieces = self.task.reply_pieces(self.model, messages, generator,
                                        max_new_tokens=max_new_tokens, temperature=temperature,
                                        top_k=top_k, top_p=top_p)
        while True:
            with torch.no_grad():
                piece = next(pieces, None)
            if piece is None:
                return
            self.forward_passes += 1
            yield piece


def stream_tokens(model, prompt_ids: torch.Tensor, max_new_tokens: int, temperature: float,
                  top_k: int | None, top_p: float | None,
                  generator: torch.Generator | None) -> Iterator[torch.Tensor]:
    """Yield each new token (N,) of `model.generate(...)` as it is drawn, the same draws: the
    model's own `stream` (a seqlab LanguageModel or TransformerLM, or an exported model)."""
    yield from model.stream(prompt_ids, max_new_tokens, temperature, top_k, top_p, generator)


def load_model(spec: str, threads: int | None = None) -> ServedModel:
    """`DIR` or `NAME=DIR`: a run directory or an export directory, checked as it loads.

    An export directory's files are checked against their sha256; a run's weights must parse
    and hold only finite numbers (a run directory records no checksum of its weights).
    """
    from seqlab.export.onnx import check_weights

    name, _, path = spec.rpartition("=")
    directory = Path(path)
    name = name or directory.resolve().name
    if (directory / "export.json").is_file():
        from seqlab.export import open_export

        _, task, model = open_export(directory, threads=threads)
        quantized = bool(model.manifest.get("quantized"))
        return ServedModel(name, directory, task, model, "onnx", quantized)
    from seqlab.train.run import open_run

    _, task, model, _ = open_run(directory, ["trainer.device=cpu"])
    check_weights(model, directory / "model.safetensors")
    return ServedModel(name, directory, task, model.float().eval(), "run")
