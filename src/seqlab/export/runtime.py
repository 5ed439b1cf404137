"""Run an export directory through onnxruntime with the run's tokenizer: predict and evaluate.

:func:`open_export` checks every file against the sha256 in ``export.json`` (a corrupt or
changed file is refused), rebuilds the run's task from the copied ``config.yaml`` and artifacts,
and returns a stand-in model that answers the calls the task makes of a seqlab model
(``model(ids, lengths=...)``, ``generate``, the step API of greedy and beam search) by running
the ONNX graphs. The task's own ``predict`` and ``evaluate`` then give the same lines and metrics
as for the run: only the arithmetic moved to onnxruntime. Tensors cross the boundary as numpy
arrays; searching and sampling stay seqlab's, so they draw the same tokens.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from seqlab.export.onnx import EXPORT_FORMAT, MANIFEST, ExportError, file_sha256

__all__ = [
    "OnnxModel",
    "evaluate_export",
    "is_export_dir",
    "open_export",
    "predict_export",
    "read_manifest",
]


def is_export_dir(path: str | Path) -> bool:
    """Whether `path` is a directory written by ``seqlab export`` / ``seqlab quantize``."""
    return (Path(path) / MANIFEST).is_file()


def read_manifest(directory: str | Path, verify: bool = True) -> dict:
    """The manifest of an export directory; with `verify`, every listed file's sha256 checked."""
    directory = Path(directory)
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot read {directory / MANIFEST}: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT:
        raise ExportError(f"{directory / MANIFEST} is not a seqlab export manifest "
                          f"(format {EXPORT_FORMAT!r} expected)")
    if verify:
        expected = {g["file"]: g["sha256"] for g in manifest["graphs"].values()}
        expected.update(manifest.get("files", {}))
        for name, digest in expected.items():
            path = directory / name
            if not path.is_file():
                raise ExportError(f"{path} is missing from the export directory; export the run again")
            if file_sha256(path) != digest:
                raise ExportError(
                    f"{path} does not match its sha256 in {MANIFEST}: the file is corrupt or was "
                    "changed; export the run again"
                )
    return manifest


@dataclass
class Rows:
    """Named tensors that share a batch dimension (`batch_dims[name]`, 0 unless said)."""

    tensors: dict[str, torch.Tensor]
    batch_dims: dict[str, int]

    def index_select(self, index: torch.Tensor) -> Rows:
        return Rows({name: t.index_select(self.batch_dims.get(name, 0), index)
                     for name, t in self.tensors.items()}, self.batch_dims)


class OnnxModel:
    """The ONNX graphs of one export directory behind the calls a task makes of its model.

    ``forward_passes`` counts graph runs (a server batching requests makes fewer of them).
    """

    def __init__(self, directory: Path, manifest: dict, threads: int | None = None) -> None:
        import onnxruntime

        self.directory = directory
        self.manifest = manifest
        self.family = manifest["family"]
        self.info = manifest.get("model", {})
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.sessions = {}
        self.input_names = {}
        for name, graph in manifest["graphs"].items():
            session = onnxruntime.InferenceSession(str(directory / graph["file"]), options,
                                                   providers=["CPUExecutionProvider"])
            self.sessions[name] = session
            self.input_names[name] = {i.name for i in session.get_inputs()}
        self.forward_passes = 0
        self.regression = bool(self.info.get("regression", False))
        self.label_smoothing = 0.0
        self.pad_id = 0

    # The torch.nn.Module calls a task makes; an exported model is always in eval mode.
    training = False

    def eval(self) -> OnnxModel:
        return self

    def train(self, mode: bool = True) -> OnnxModel:
        return self

    def run(self, graph: str, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Run one graph: torch tensors in (those it reads), torch tensors out, by name."""
        session = self.sessions[graph]
        wanted = self.input_names[graph]
        arrays = {name: _array(t) for name, t in feeds.items() if name in wanted}
        self.forward_passes += 1
        outputs = session.run(None, arrays)
        names = [o.name for o in session.get_outputs()]
        return {name: torch.from_numpy(np.asarray(value)) for name, value in zip(names, outputs)}

    def __call__(self, *args, **kwargs):
        if self.family in ("classifier", "tagger"):
            return self._classify(*args, **kwargs)
        if self.family in ("lm", "lm-transformer"):
            return self._language_model(*args, **kwargs)
        return self._seq2seq(*args, **kwargs)

    # Classifiers and taggers.
    def _classify(self, inputs: torch.Tensor, lengths: torch.Tensor | None = None,
                  targets: torch.Tensor | None = None, **_):
        from seqlab.models.outputs import ClassifierOutput, TaggerOutput

        if lengths is None:
            lengths = torch.full((inputs.size(0),), inputs.size(1), dtype=torch.long)
        first = "inputs" if inputs.is_floating_point() else "input_ids"
        logits = self.run("model", {first: inputs, "lengths": lengths.long()})["logits"]
        loss = None
        if targets is not None:
            loss = self._classify_loss(logits, lengths, targets)
        output = TaggerOutput if self.family == "tagger" else ClassifierOutput
        return output(logits=logits, loss=loss)

    def _classify_loss(self, logits, lengths, targets):
        if self.family == "classifier":
            if self.regression:
                return F.mse_loss(logits, targets.to(logits.dtype).reshape(logits.shape))
            return F.cross_entropy(logits, targets)
        mask = torch.arange(logits.size(1))[None, :] < lengths[:, None]  # (N, L)
        if self.regression:
            targets = targets.to(logits.dtype).reshape(logits.shape)
            return F.mse_loss(logits[mask], targets[mask])
        targets = targets.masked_fill(~mask, -100)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1),
                               ignore_index=-100)

    # Language models: the step graph, with the recurrent state or the key/value cache.
    @property
    def max_length(self) -> int | None:
        """A Transformer language model's positions (None for other families)."""
        return self.info.get("max_length") if self.family == "lm-transformer" else None

    @property
    def context_length(self) -> int | None:
        """The positions real tokens may take (as TransformerLM.context_length): all of them,
        since a tuned run is merged before export and so carries no soft prompt."""
        return self.max_length

    def new_cache(self) -> KeyValueState | None:
        """An empty key/value cache to pass as ``state`` (as TransformerLM.new_cache): the
        call that fills it returns it grown. None for a recurrent model, whose state starts
        empty anyway."""
        return KeyValueState([]) if self.family == "lm-transformer" else None

    def _empty_state(self, batch: int):
        info = self.info
        if self.family == "lm":
            zeros = torch.zeros(info["num_layers"], batch, info["hidden_size"])
            return (zeros, zeros.clone()) if info["cell"] == "lstm" else zeros
        return KeyValueState.empty(batch, info["num_layers"], info["num_heads"], info["head_dim"])

    def _language_model(self, ids: torch.Tensor, state=None, targets: torch.Tensor | None = None,
                        **_):
        from seqlab.models.outputs import LMOutput

        given = state
        if state is None or (isinstance(state, KeyValueState) and not state.tensors):
            state = self._empty_state(ids.size(0))  # nothing yet, or a new_cache()
        if self.family == "lm":
            parts = state if isinstance(state, tuple) else (state,)
            feeds = {"input_ids": ids.long(), "h": parts[0]}
            if len(parts) == 2:
                feeds["c"] = parts[1]
            out = self.run("model", feeds)
            new_state = (out["h_out"], out["c_out"]) if len(parts) == 2 else out["h_out"]
        else:
            out = self.run("model", {"input_ids": ids.long(), **state.feeds("past")})
            new_state = KeyValueState.from_outputs(out, "present", self.info["num_layers"])
            if given is None:
                new_state = None  # as a Transformer without a cache: each call alone
        logits = out["logits"]
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1),
                                   ignore_index=-100)
        return LMOutput(logits=logits, loss=loss, state=new_state)

    @torch.no_grad()
    def generate(self, prompt_ids, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """As the model's own ``generate``: (N, P) prompt -> (N, P + max_new_tokens) tokens."""
        tokens = prompt_ids
        for next_token in self.stream(prompt_ids, max_new_tokens, temperature, top_k, top_p,
                                      generator):
            tokens = torch.cat([tokens, next_token[:, None]], dim=1)
        return tokens

    def stream(self, prompt_ids, max_new_tokens: int, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None,
               generator: torch.Generator | None = None):
        """Yield each new token (N,) as soon as it is drawn (the same draws as `generate`)."""
        from seqlab.decode.sampling import prompt_batch, sample_next_token, windowed_stream

        prompt_ids = prompt_batch(prompt_ids, max_new_tokens, torch.device("cpu"))  # (N, P)
        if self.family == "lm":
            out = self._language_model(prompt_ids)
            for step in range(max_new_tokens):
                next_token = sample_next_token(out.logits[:, -1], temperature=temperature,
                                               top_k=top_k, top_p=top_p, generator=generator)
                yield next_token
                if step + 1 < max_new_tokens:
                    out = self._language_model(next_token[:, None], out.state)
            return
        # The Transformer's sliding window once its positions run out, as TransformerLM.stream.

        def forward(ids, cache):
            out = self._language_model(ids, cache)
            return out.logits[:, -1], out.state

        yield from windowed_stream(
            forward, prompt_ids, max_new_tokens, self.context_length,
            cache=self._empty_state(prompt_ids.size(0)), capacity=self.context_length,
            temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)

    # Encoder-decoders: the step API of seqlab.decode.
    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> Rows:
        limit = self.info.get("max_source_length")
        longest = int(src_lengths.max())
        if limit is not None and longest > limit:
            raise ValueError(f"source length {longest} is longer than max_source_length={limit}; "
                             "shorten or split the input")
        if self.family == "captioner":
            out = self.run("encoder", {"images": src.float()})
        else:
            out = self.run("encoder", {"src": src.long(), "src_lengths": src_lengths.long()})
        dims = {"h": 1, "c": 1}
        return Rows(out, dims)

    def init_state(self, memory: Rows) -> Rows:
        if self.family in ("seq2seq", "captioner"):
            names = [n for n in ("h", "c", "feed") if n in memory.tensors]
            return Rows({n: memory.tensors[n] for n in names}, {"h": 1, "c": 1})
        batch = memory.tensors["memory_padding"].size(0)
        info = self.info
        empty = KeyValueState.empty(batch, info["num_layers"], info["num_heads"], info["head_dim"])
        return Rows(empty.feeds("past"), {})

    def step(self, prev_tokens: torch.Tensor, state: Rows, memory: Rows):
        feeds = {"prev_tokens": prev_tokens.long(), **memory.tensors, **state.tensors}
        out = self.run("decoder", feeds)
        if self.family in ("seq2seq", "captioner"):
            new = {n: out[f"{n}_out"] for n in state.tensors}
            return out["log_probs"], Rows(new, state.batch_dims), out.get("attention")
        layers = self.info["num_layers"]
        new = {name.replace("present", "past"): out[name]
               for name in _kv_names("present", layers)}
        return out["log_probs"], Rows(new, {}), None

    def reorder_state(self, state: Rows, index: torch.Tensor) -> Rows:
        return state.index_select(index)

    def reorder_memory(self, memory: Rows, index: torch.Tensor) -> Rows:
        return memory.index_select(index)

    def _seq2seq(self, src, *args, **_):
        """Teacher-forced scores of tgt (N, T), one decoder step per position.

        Called as a seq2seq model, ``(src, src_lengths, tgt)``, or a captioner, ``(images, tgt)``.
        """
        from seqlab.models.seq2seq import Seq2SeqOutput

        if self.family == "captioner":
            (tgt,) = args
            src_lengths = torch.ones(src.size(0), dtype=torch.long)
        else:
            src_lengths, tgt = args
        memory = self.encode(src, src_lengths)
        state = self.init_state(memory)
        steps = []
        for t in range(tgt.size(1) - 1):
            log_probs, state, _ = self.step(tgt[:, t], state, memory)
            steps.append(log_probs)
        logits = torch.stack(steps, dim=1)  # (N, T-1, V) log-probabilities
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt[:, 1:].reshape(-1),
                               ignore_index=self.pad_id, label_smoothing=self.label_smoothing)
        return Seq2SeqOutput(logits=logits, loss=loss)


def _array(tensor: torch.Tensor) -> np.ndarray:
    if tensor.dtype == torch.bool:
        return tensor.numpy()
    return tensor.detach().contiguous().numpy()


def _kv_names(prefix: str, layers: int) -> list[str]:
    return [f"{prefix}_{kind}_{i}" for i in range(layers) for kind in ("key", "value")]


@dataclass
class KeyValueState:
    """A Transformer's key/value cache as the step graphs pass it: (N, h, P, d) per layer."""

    tensors: list[torch.Tensor]

    @classmethod
    def empty(cls, batch: int, layers: int, heads: int, head_dim: int) -> KeyValueState:
        return cls([torch.zeros(batch, heads, 0, head_dim) for _ in range(2 * layers)])

    @classmethod
    def from_outputs(cls, outputs: dict, prefix: str, layers: int) -> KeyValueState:
        return cls([outputs[name] for name in _kv_names(prefix, layers)])

    @property
    def length(self) -> int:
        return self.tensors[0].size(2) if self.tensors else 0

    def feeds(self, prefix: str) -> dict[str, torch.Tensor]:
        return dict(zip(_kv_names(prefix, len(self.tensors) // 2), self.tensors))

    def index_select(self, index: torch.Tensor) -> KeyValueState:
        return KeyValueState([t.index_select(0, index) for t in self.tensors])


def open_export(directory: str | Path, overrides: list[str] | None = None,
                threads: int | None = None):
    """(config, task, model) of an export directory; the model runs the ONNX graphs."""
    from seqlab.train.run import build_task, load_run_config

    directory = Path(directory)
    manifest = read_manifest(directory)
    config = load_run_config(directory, overrides)
    task = build_task(config)
    task.load_artifacts(directory)
    model = OnnxModel(directory, manifest, threads=threads)
    tokenizer = getattr(task, "tokenizer", None)
    if tokenizer is not None:
        model.pad_id = tokenizer.pad_id
    model.label_smoothing = float(getattr(task.model_config, "label_smoothing", 0.0) or 0.0)
    return config, task, model


def predict_export(directory: str | Path, inputs: list[str],
                   overrides: list[str] | None = None) -> list[str]:
    """One output line per input, as `seqlab predict` prints them for the run."""
    _, task, model = open_export(directory, overrides)
    with torch.no_grad():
        return task.predict(model, inputs, torch.device("cpu"))


def evaluate_export(directory: str | Path, overrides: list[str] | None = None) -> dict:
    """The run's metrics on its evaluation splits, computed through the ONNX graphs."""
    config, task, model = open_export(directory, overrides)
    task.prepare(fit_vocab=False)
    batch_size = config.trainer.eval_batch_size or config.trainer.batch_size
    with torch.no_grad():
        return {split: task.evaluate(model, split, batch_size, torch.device("cpu"))
                for split in task.splits()}
