"""Export a run's model to ONNX graphs that onnxruntime runs without Python-torch.

One graph per piece that a caller drives, with every batch and length dimension left free:

============================= ====================== ===========================================
family (model)                graph                  inputs -> outputs
============================= ====================== ===========================================
classifier                    model.onnx             input_ids (N, L), lengths (N,) -> logits (N, C)
(SequenceClassifier,          (float features:       inputs (N, L, F) instead of input_ids)
TransformerClassifier)
tagger (SequenceTagger,       model.onnx             input_ids, lengths -> logits (N, L, C)
TransformerTagger)
lm (LanguageModel)            model.onnx (a step)    input_ids (N, L), h (K, N, H) [, c]
                                                     -> logits (N, L, V), h_out [, c_out]
lm-transformer                model.onnx (a step)    input_ids (N, L), past_key_k, past_value_k
(TransformerLM)                                      (N, h, P, d) -> logits, present_key_k,
                                                     present_value_k (N, h, P + L, d)
seq2seq (Seq2Seq)             encoder.onnx           src (N, S), src_lengths -> memory, memory_mask,
                                                     [projected_keys], h [, c] [, feed]
                              decoder.onnx (a step)  prev_tokens (N,), memory, memory_mask, ...,
                                                     h [, c] [, feed] -> log_probs (N, V), h_out
                                                     [, c_out] [, feed_out], [attention (N, S)]
captioner (Captioner)         encoder.onnx           images (N, C_in, P, P) -> memory (N, R, C),
                                                     [projected_keys], h [, c] [, feed]
                              decoder.onnx (a step)  as seq2seq's, without memory_mask
seq2seq-transformer           encoder.onnx           src, src_lengths -> memory_padding,
(TransformerSeq2Seq)                                 cross_key_k, cross_value_k (N, h, S, d)
                              decoder.onnx (a step)  prev_tokens, memory_padding, past_key_k,
                                                     past_value_k, cross_key_k, cross_value_k
                                                     -> log_probs, present_key_k, present_value_k
============================= ====================== ===========================================

K = layers × directions, P = cached positions. A language model's step graph reads its own state
back, so generation is a loop of session runs: feed the prompt with an empty state (zeros, or a
cache with P = 0), then one token at a time with the state it returned.

The export directory holds the graphs, the run's ``config.yaml``, tokenizer and labels, and
``export.json`` (the manifest: family, graph inputs and outputs, the sha256 of every file, and
the largest difference from torch measured on export). ``seqlab predict DIR`` runs it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from pathlib import Path

import torch
from torch import nn

from seqlab.export.recurrent import export_recurrent_layers

__all__ = ["EXPORT_FORMAT", "MANIFEST", "ExportError", "check_weights", "export_onnx", "file_sha256",
           "model_family"]

MANIFEST = "export.json"
EXPORT_FORMAT = "seqlab-export-1"
OPSET = 17
# Files of a run that a prediction needs besides the weights; copied when present.
RUN_FILES = ("config.yaml", "tokenizer.json", "source_tokenizer.json", "labels.json", "summary.json",
             "chat_template.json")


class ExportError(ValueError):
    """A run that cannot be exported, or an export directory that cannot be used."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def refuse_tuned_run(run_dir: Path) -> None:
    """A tuned run holds only its adapter; its plain weights come from `seqlab merge`."""
    if (Path(run_dir) / "adapter.json").is_file():
        raise ExportError(
            f"{run_dir} is a tuned run (adapter.safetensors only): fold the adapter into plain "
            f"weights first with `seqlab merge {run_dir} --out DIR`, then export DIR"
        )


def check_weights(model: nn.Module, path: Path) -> None:
    """Refuse weights with NaN or infinite values (a damaged file, or a run that diverged).

    A run directory records no checksum of its weights; a file that fails to parse is refused
    when it loads, and this catches what parses but cannot be right.
    """
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ExportError(f"{path} holds non-finite weights ({name}); the file is damaged or "
                              "the run diverged")


def model_family(model: nn.Module) -> str:
    """The export family of a seqlab model, or ExportError naming the ones that export."""
    from seqlab.models import (
        Captioner,
        LanguageModel,
        Seq2Seq,
        SequenceClassifier,
        SequenceTagger,
        TransformerClassifier,
        TransformerLM,
        TransformerSeq2Seq,
        TransformerTagger,
    )

    families = [
        ((SequenceClassifier, TransformerClassifier), "classifier"),
        ((SequenceTagger, TransformerTagger), "tagger"),
        ((LanguageModel,), "lm"),
        ((TransformerLM,), "lm-transformer"),
        ((Seq2Seq,), "seq2seq"),
        ((TransformerSeq2Seq,), "seq2seq-transformer"),
        ((Captioner,), "captioner"),
    ]
    for classes, family in families:
        if isinstance(model, classes):
            return family
    raise ExportError(
        f"{type(model).__name__} models do not export to ONNX yet; the families that do are "
        "classifiers, taggers, recurrent and Transformer language models, seq2seq models and "
        "captioners"
    )


# Graph modules: each wraps the model behind plain tensor inputs and outputs, in eval mode.


class _ClassifierGraph(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.model(inputs, lengths=lengths).logits  # (N, C) or (N, L, C)


class _RecurrentLMGraph(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, *state: torch.Tensor):
        out = self.model(input_ids, state=state if len(state) == 2 else state[0])
        new_state = out.state if isinstance(out.state, tuple) else (out.state,)
        return (out.logits, *new_state)


def _cache(layers: int, past: tuple[torch.Tensor, ...]):
    from seqlab.decode.kv_cache import KVCache

    cache = KVCache(layers)
    for index, layer in enumerate(cache.layers):
        layer.key, layer.value = past[2 * index], past[2 * index + 1]  # (N, h, P, d)
    return cache


def _flat(cache) -> tuple[torch.Tensor, ...]:
    return tuple(t for layer in cache.layers for t in (layer.key, layer.value))


class _TransformerLMGraph(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, *past: torch.Tensor):
        cache = _cache(self.model.num_layers, past)
        logits = self.model(input_ids, state=cache).logits  # (N, L, V)
        return (logits, *_flat(cache))


class _Seq2SeqEncoderGraph(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, src: torch.Tensor, src_lengths: torch.Tensor):
        memory = self.model.encode(src, src_lengths)
        state = self.model.init_state(memory)
        hidden = state.hidden if isinstance(state.hidden, tuple) else (state.hidden,)
        outputs = [memory.outputs] + ([] if memory.mask is None else [memory.mask])
        if memory.projected_keys is not None:
            outputs.append(memory.projected_keys)
        outputs.extend(hidden)
        if state.feed is not None:
            outputs.append(state.feed)
        return tuple(outputs)


class _Seq2SeqDecoderGraph(nn.Module):
    def __init__(self, model: nn.Module, projected: bool, lstm: bool, feed: bool,
                 attention: bool, mask: bool = True) -> None:
        super().__init__()
        self.model = model
        self.projected, self.lstm, self.feed, self.attention = projected, lstm, feed, attention
        self.mask = mask  # a captioner's image regions are all real: no mask

    def forward(self, prev_tokens: torch.Tensor, *tensors: torch.Tensor):
        from seqlab.models.seq2seq import DecoderState, EncoderMemory

        tensors = list(tensors)
        outputs = tensors.pop(0)
        mask = tensors.pop(0) if self.mask else None
        projected = tensors.pop(0) if self.projected else None
        hidden = (tensors.pop(0), tensors.pop(0)) if self.lstm else tensors.pop(0)
        feed = tensors.pop(0) if self.feed else None
        memory = EncoderMemory(outputs, mask, None, None, projected)
        log_probs, state, weights = self.model.step(prev_tokens, DecoderState(hidden, feed), memory)
        result = [log_probs, *(state.hidden if self.lstm else (state.hidden,))]
        if self.feed:
            result.append(state.feed)
        if self.attention:
            result.append(weights)
        return tuple(result)


class _CaptionerEncoderGraph(_Seq2SeqEncoderGraph):
    def forward(self, images: torch.Tensor):
        return super().forward(images, None)


class _TransformerEncoderGraph(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, src: torch.Tensor, src_lengths: torch.Tensor):
        memory = self.model.encode(src, src_lengths)
        return (memory.padding, *(t for pair in memory.key_values for t in pair))


class _TransformerDecoderGraph(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, prev_tokens: torch.Tensor, memory_padding: torch.Tensor, *tensors):
        from seqlab.models.transformer import TransformerMemory

        layers = self.model.num_decoder_layers
        past, cross = tensors[: 2 * layers], tensors[2 * layers:]
        cache = _cache(layers, past)
        key_values = [(cross[2 * i], cross[2 * i + 1]) for i in range(layers)]
        # The decoder reads the source only through the projected keys and values; `outputs`
        # is passed for its batch size and dtype.
        memory = TransformerMemory(cross[0][:, 0], memory_padding, None, key_values)
        log_probs, cache, _ = self.model.step(prev_tokens, cache, memory)
        return (log_probs, *_flat(cache))


# What each family exports: graph name -> (module, example inputs, input names, output names,
# dynamic axes). The example batch has rows of different lengths so that every masked path of
# the model is the one that is traced.


def _lengths_example(batch_lengths=(5, 2, 4)) -> torch.Tensor:
    return torch.tensor(batch_lengths, dtype=torch.long)


def _ids(vocab_size: int, batch: int, length: int, low: int = 4) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(min(low, vocab_size - 1), vocab_size, (batch, length), generator=generator)


def _classifier_spec(model, family):
    lengths = _lengths_example()
    if getattr(model, "embedding", 1) is None:  # float features
        inputs = torch.randn(3, 5, _rnn(model).input_size, generator=torch.Generator().manual_seed(0))
        first = "inputs"
        axes = {"inputs": {0: "batch", 1: "length"}}
    else:
        vocab = _vocab_size(model)
        inputs = _ids(vocab, 3, 5)
        first = "input_ids"
        axes = {"input_ids": {0: "batch", 1: "length"}}
    axes["lengths"] = {0: "batch"}
    axes["logits"] = {0: "batch", 1: "length"} if family == "tagger" else {0: "batch"}
    return {"model": (_ClassifierGraph(model), (inputs, lengths), [first, "lengths"], ["logits"], axes)}


def _rnn(model) -> nn.Module:
    """The model's seqlab recurrent layer (also when swapped for its export stand-in)."""
    return getattr(model.rnn, "layer", model.rnn)


def _vocab_size(model) -> int:
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            return module.num_embeddings
    raise ExportError(f"{type(model).__name__} has no token embedding")


def _recurrent_state_names(rnn) -> tuple[list[str], list[str]]:
    names = ["h", "c"] if rnn.mode == "LSTM" else ["h"]
    return names, [f"{name}_out" for name in names]


def _lm_spec(model):
    rnn = _rnn(model)
    ids = _ids(model.vocab_size, 2, 3)
    zeros = torch.randn(rnn.num_layers, 2, rnn.hidden_size) * 0.1
    names, out_names = _recurrent_state_names(rnn)
    state = tuple(zeros for _ in names)
    axes = {"input_ids": {0: "batch", 1: "length"}, "logits": {0: "batch", 1: "length"}}
    axes.update({name: {1: "batch"} for name in names + out_names})
    return {"model": (_RecurrentLMGraph(model), (ids, *state), ["input_ids", *names],
                      ["logits", *out_names], axes)}


def _kv_names(prefix: str, layers: int) -> list[str]:
    return [f"{prefix}_{kind}_{i}" for i in range(layers) for kind in ("key", "value")]


def _attention_sizes(model) -> tuple[int, int]:
    from seqlab.nn.multihead import MultiheadAttention

    attention = next(m for m in model.modules() if isinstance(m, MultiheadAttention))
    return attention.num_heads, attention.head_dim


def _transformer_lm_spec(model):
    heads, head_dim = _attention_sizes(model)
    layers = model.num_layers
    ids = _ids(model.vocab_size, 2, 3)
    past = tuple(torch.randn(2, heads, 2, head_dim) for _ in range(2 * layers))
    past_names, present_names = _kv_names("past", layers), _kv_names("present", layers)
    axes = {"input_ids": {0: "batch", 1: "length"}, "logits": {0: "batch", 1: "length"}}
    axes.update({name: {0: "batch", 2: "past"} for name in past_names})
    axes.update({name: {0: "batch", 2: "total"} for name in present_names})
    return {"model": (_TransformerLMGraph(model), (ids, *past), ["input_ids", *past_names],
                      ["logits", *present_names], axes)}


def _seq2seq_spec(model, captioner: bool = False):
    if captioner:  # images (N, C_in, P, P) instead of token ids
        image = model.encoder
        src = torch.rand(3, image.in_channels, image.image_size, image.image_size,
                         generator=torch.Generator().manual_seed(0))
        lengths = torch.ones(3, dtype=torch.long)
    else:
        src, lengths = _ids(_vocab_size(model.encoder), 3, 5), _lengths_example()
    with torch.no_grad():
        memory = model.encode(src, lengths)
        state = model.init_state(memory)
    lstm = isinstance(state.hidden, tuple)
    projected = memory.projected_keys is not None
    feed = state.feed is not None
    attention = model.decoder.attention is not None
    memory_names = ["memory"] + ([] if captioner else ["memory_mask"])
    memory_names += ["projected_keys"] if projected else []
    state_names = (["h", "c"] if lstm else ["h"]) + (["feed"] if feed else [])
    encoder_axes = {"src": {0: "batch", 1: "source"}, "src_lengths": {0: "batch"},
                    "memory": {0: "batch", 1: "source"}, "memory_mask": {0: "batch", 1: "source"},
                    "projected_keys": {0: "batch", 1: "source"}, "h": {1: "batch"},
                    "c": {1: "batch"}, "feed": {0: "batch"}}
    if captioner:
        encoder_axes["images"] = {0: "batch"}
        encoder = (_CaptionerEncoderGraph(model), (src,), ["images"], memory_names + state_names,
                   encoder_axes)
    else:
        encoder = (_Seq2SeqEncoderGraph(model), (src, lengths), ["src", "src_lengths"],
                   memory_names + state_names, encoder_axes)
    memory_tensors = [memory.outputs] + ([] if captioner else [memory.mask])
    memory_tensors += [memory.projected_keys] if projected else []
    hidden = list(state.hidden) if lstm else [state.hidden]
    state_tensors = hidden + ([state.feed] if feed else [])
    out_names = ["log_probs"] + [f"{name}_out" for name in state_names]
    out_names += ["attention"] if attention else []
    decoder_axes = {name: axes for name, axes in encoder_axes.items() if name in memory_names}
    decoder_axes.update({"prev_tokens": {0: "batch"}, "log_probs": {0: "batch"},
                         "attention": {0: "batch", 1: "source"}})
    for name in state_names:
        decoder_axes[name] = decoder_axes[f"{name}_out"] = encoder_axes[name]
    prev_tokens = torch.full((3,), 4, dtype=torch.long)
    decoder = (_Seq2SeqDecoderGraph(model, projected, lstm, feed, attention, mask=not captioner),
               (prev_tokens, *memory_tensors, *state_tensors), ["prev_tokens", *memory_names,
                                                             *state_names], out_names, decoder_axes)
    return {"encoder": encoder, "decoder": decoder}


def _transformer_seq2seq_spec(model):
    heads, head_dim = _attention_sizes(model)
    layers = model.num_decoder_layers
    src, lengths = _ids(model.source_embedding.token.num_embeddings, 3, 5), _lengths_example()
    cross_names = _kv_names("cross", layers)
    encoder_axes = {"src": {0: "batch", 1: "source"}, "src_lengths": {0: "batch"},
                    "memory_padding": {0: "batch", 1: "source"}}
    encoder_axes.update({name: {0: "batch", 2: "source"} for name in cross_names})
    encoder = (_TransformerEncoderGraph(model), (src, lengths), ["src", "src_lengths"],
               ["memory_padding", *cross_names], encoder_axes)
    with torch.no_grad():
        memory = model.encode(src, lengths)
    past = tuple(torch.randn(3, heads, 2, head_dim) for _ in range(2 * layers))
    cross = tuple(t for pair in memory.key_values for t in pair)
    past_names, present_names = _kv_names("past", layers), _kv_names("present", layers)
    decoder_axes = {"prev_tokens": {0: "batch"}, "log_probs": {0: "batch"},
                    "memory_padding": {0: "batch", 1: "source"}}
    decoder_axes.update({name: {0: "batch", 2: "source"} for name in cross_names})
    decoder_axes.update({name: {0: "batch", 2: "past"} for name in past_names})
    decoder_axes.update({name: {0: "batch", 2: "total"} for name in present_names})
    # Example target tokens from the target vocabulary (the source one may be larger).
    prev_tokens = _ids(model.target_embedding.token.num_embeddings, 3, 1)[:, 0]
    decoder = (_TransformerDecoderGraph(model), (prev_tokens, memory.padding, *past, *cross),
               ["prev_tokens", "memory_padding", *past_names, *cross_names],
               ["log_probs", *present_names], decoder_axes)
    return {"encoder": encoder, "decoder": decoder}


def graph_specs(model: nn.Module, family: str) -> dict:
    """{graph name: (module, example inputs, input names, output names, dynamic axes)}."""
    if family in ("classifier", "tagger"):
        return _classifier_spec(model, family)
    if family == "lm":
        return _lm_spec(model)
    if family == "lm-transformer":
        return _transformer_lm_spec(model)
    if family in ("seq2seq", "captioner"):
        return _seq2seq_spec(model, captioner=family == "captioner")
    return _transformer_seq2seq_spec(model)


def _model_info(model: nn.Module, family: str) -> dict:
    """What the runtime needs to build empty states: layers, heads, sizes."""
    info: dict = {}
    if family == "lm":
        rnn = _rnn(model)
        info = {"cell": rnn.mode.lower(), "num_layers": rnn.num_layers, "hidden_size": rnn.hidden_size,
                "vocab_size": model.vocab_size}
    elif family == "lm-transformer":
        heads, head_dim = _attention_sizes(model)
        info = {"num_layers": model.num_layers, "num_heads": heads, "head_dim": head_dim,
                "max_length": model.max_length, "vocab_size": model.vocab_size}
    elif family == "seq2seq-transformer":
        heads, head_dim = _attention_sizes(model)
        info = {"num_layers": model.num_decoder_layers, "num_heads": heads, "head_dim": head_dim}
    elif family == "seq2seq":
        info = {"max_source_length": model.max_source_length}
    elif family == "captioner":
        info = {"image_size": model.encoder.image_size, "in_channels": model.encoder.in_channels}
    else:
        info = {"regression": bool(getattr(model, "regression", False))}
    return info


def _run_session(path: Path, names: list[str], inputs: tuple[torch.Tensor, ...]) -> list:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    feed = {name: t.numpy() for name, t in zip(names, inputs) if name in wanted}
    return session.run(None, feed)


def _export_graph(module, inputs, input_names, output_names, axes, path: Path) -> float:
    """Write one graph and return the largest |onnxruntime − torch| on the example inputs."""
    axes = {name: dims for name, dims in axes.items() if name in input_names + output_names}
    module.eval()  # a new wrapper starts in training mode, and export restores the mode it found
    with torch.no_grad():
        expected = module(*inputs)
    expected = expected if isinstance(expected, tuple) else (expected,)
    with warnings.catch_warnings():
        # Argument checks on the example's sizes (e.g. lengths within the padded length) are
        # traced as constants; they do not change the graph's arithmetic.
        warnings.simplefilter("ignore")
        torch.onnx.export(module, inputs, str(path), dynamo=False, opset_version=OPSET,
                          input_names=input_names, output_names=output_names,
                          dynamic_axes=axes, do_constant_folding=True)
    got = _run_session(path, input_names, inputs)
    return max(float((torch.as_tensor(g).double() - e.double()).abs().max())
               for g, e in zip(got, expected) if e.dtype.is_floating_point)


def export_onnx(run_dir: str | Path, out_dir: str | Path) -> dict:
    """Export the run in `run_dir` to ONNX graphs in `out_dir`; returns the manifest.

    Raises ExportError for a model family that does not export (or ExportError / RunDirError /
    CheckpointError for a damaged run), and refuses an `out_dir` that holds other files.
    """
    from seqlab.train.run import open_run

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    refuse_tuned_run(run_dir)
    config, _, model, _ = open_run(run_dir, ["trainer.device=cpu"])
    check_weights(model, run_dir / "model.safetensors")
    family = model_family(model)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / MANIFEST).is_file():
        raise ExportError(f"{out_dir} exists and is not an export directory; pick an empty --out")
    if (out_dir / MANIFEST).is_file():  # exporting again: the old graphs go first
        for old in out_dir.glob("*.onnx"):
            old.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    graph_model = export_recurrent_layers(model.float().eval())
    graphs = {}
    for name, (module, inputs, input_names, output_names, axes) in graph_specs(
            graph_model, family).items():
        path = out_dir / f"{name}.onnx"
        difference = _export_graph(module, inputs, input_names, output_names, axes, path)
        graphs[name] = {"file": path.name, "sha256": file_sha256(path), "inputs": input_names,
                        "outputs": output_names, "max_abs_difference": difference}
    files = {}
    for name in RUN_FILES:
        if (run_dir / name).is_file():
            if run_dir.resolve() != out_dir.resolve():
                shutil.copyfile(run_dir / name, out_dir / name)
            files[name] = file_sha256(out_dir / name)
    manifest = {
        "format": EXPORT_FORMAT, "family": family, "task": config.task, "opset": OPSET,
        "quantized": False, "graphs": graphs, "files": files, "model": _model_info(model, family),
        "source": {"run_dir": str(run_dir), "weights_sha256": file_sha256(run_dir / "model.safetensors")},
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest
