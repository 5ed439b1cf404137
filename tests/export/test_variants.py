"""Every recurrent variant exports: two bidirectional layers, padded rows, three lengths."""

import numpy as np
import onnxruntime
import pytest
import torch

TOLERANCE = 1e-4


def id_batch(vocab_size, batch, length, seed):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab_size, (batch, length), generator=generator)
    lengths = torch.randint(1, length + 1, (batch,), generator=generator)
    lengths[0] = length
    ids[torch.arange(length)[None, :] >= lengths[:, None]] = 0
    return ids, lengths


CELLS = [
    ("lstm", {}), ("lstm", {"peephole": True}), ("lstm", {"coupled": True}),
    ("lstm", {"peephole": True, "coupled": True}), ("gru", {"reset_after": False}),
    ("gru", {}), ("rnn", {"nonlinearity": "relu"}), ("rnn", {"init": "identity"}),
]


def assert_graph_matches(model, graph_model, family, path):
    """Export `graph_model`'s graph; its logits match `model`'s on valid positions, three lengths."""
    from seqlab.export.onnx import _export_graph, graph_specs

    module, inputs, names, outputs, axes = graph_specs(graph_model, family)["model"]
    _export_graph(module, inputs, names, outputs, axes, path)
    session = onnxruntime.InferenceSession(str(path))
    for length in (1, 7, 19):
        ids, lengths = id_batch(20, 3, length, seed=length)
        with torch.no_grad():
            expected = model(ids, lengths=lengths).logits
        (got,) = session.run(None, {"input_ids": ids.numpy(), "lengths": lengths.numpy()})
        valid = (torch.arange(length)[None, :] < lengths[:, None]).numpy()
        assert np.abs(got[valid] - expected.numpy()[valid]).max() <= TOLERANCE


@pytest.mark.parametrize(("cell", "options"), CELLS)
def test_every_recurrent_variant_exports(tmp_path, cell, options):
    """Two bidirectional layers merged by sum, right-padded rows, three lengths."""
    from seqlab.export.recurrent import export_recurrent_layers
    from seqlab.models import SequenceTagger

    torch.manual_seed(0)
    model = SequenceTagger(3, 6, cell=cell, vocab_size=20, embedding_dim=5, num_layers=2,
                           bidirectional=True, merge_mode="sum", **options).eval()
    assert_graph_matches(model, export_recurrent_layers(model), "tagger", tmp_path / "model.onnx")


def test_transformer_tagger_exports(tmp_path):
    from seqlab.export.onnx import model_family
    from seqlab.models import TransformerEncoderModel, TransformerTagger

    torch.manual_seed(0)
    encoder = TransformerEncoderModel(20, d_model=8, nhead=2, num_layers=1, dropout=0.0,
                                      max_length=24)
    model = TransformerTagger(encoder, 3, dropout=0.0).eval()
    assert_graph_matches(model, model, model_family(model), tmp_path / "model.onnx")
