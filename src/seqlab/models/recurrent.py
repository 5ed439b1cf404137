"""Build a batch-first recurrent layer (RNN / LSTM / GRU, their variants, minGRU / minLSTM) from a cell name."""

from __future__ import annotations

from torch import nn

from seqlab.nn import GRU, LSTM, RNN, MinGRU, MinLSTM

__all__ = ["CELLS", "check_cell", "input_embedding", "recurrent_layer"]

CELLS = ("rnn", "lstm", "gru", "mingru", "minlstm")

# Options that only one kind of cell understands, with the value meaning "not used".
_CELL_OPTIONS = {
    "nonlinearity": ("rnn", "tanh"),
    "init": ("rnn", "default"),
    "peephole": ("lstm", False),
    "coupled": ("lstm", False),
    "reset_after": ("gru", True),
}


def check_cell(cell: str) -> None:
    """Raise ValueError unless ``cell`` is one of :data:`CELLS`."""
    if cell not in CELLS:
        raise ValueError(f"cell should be one of {', '.join(map(repr, CELLS))}, got {cell!r}")


def recurrent_layer(
    cell: str,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    dropout: float = 0.0,
    bidirectional: bool = False,
    merge_mode: str = "concat",
    nonlinearity: str = "tanh",
    init: str = "default",
    peephole: bool = False,
    coupled: bool = False,
    reset_after: bool = True,
) -> nn.Module:
    """Return a ``batch_first=True`` :mod:`seqlab.nn` recurrent layer.

    ``cell`` picks the layer: ``"rnn"`` -> :class:`seqlab.nn.RNN` (``nonlinearity``, ``init``),
    ``"lstm"`` -> :class:`seqlab.nn.LSTM` (``peephole``, ``coupled``), ``"gru"`` ->
    :class:`seqlab.nn.GRU` (``reset_after``), ``"mingru"`` / ``"minlstm"`` ->
    :class:`seqlab.nn.MinGRU` / :class:`seqlab.nn.MinLSTM` (parallel scan in training, no cell
    state: their final state is h_n alone). Setting an option of another cell to anything but its
    default is an error rather than silently ignored. ``dropout`` acts between stacked layers, as
    in torch.nn, so it is only passed on when ``num_layers > 1``.

    The layer's ``forward(input, hx=None, lengths=None)`` takes input (N, L, H_in) and returns
    output (N, L, layer.output_size) and the final state (h_n, or (h_n, c_n) for LSTM), each
    (num_layers * D, N, hidden_size) with D = 2 if bidirectional else 1.
    """
    check_cell(cell)
    options = {
        "nonlinearity": nonlinearity,
        "init": init,
        "peephole": peephole,
        "coupled": coupled,
        "reset_after": reset_after,
    }
    for name, value in options.items():
        owner, unused = _CELL_OPTIONS[name]
        if owner != cell and value != unused:
            raise ValueError(
                f"{name}={value!r} only applies to cell={owner!r}, got cell={cell!r} "
                f"(leave {name} at {unused!r})"
            )
    if not 0.0 <= dropout <= 1.0:
        raise ValueError(f"dropout should be a number in range [0, 1], got {dropout!r}")

    common = {
        "input_size": input_size,
        "hidden_size": hidden_size,
        "num_layers": num_layers,
        "batch_first": True,
        "dropout": dropout if num_layers > 1 else 0.0,
        "bidirectional": bidirectional,
        "merge_mode": merge_mode,
    }
    if cell == "rnn":
        return RNN(**common, nonlinearity=nonlinearity, init=init)
    if cell == "lstm":
        return LSTM(**common, peephole=peephole, coupled=coupled)
    if cell == "mingru":
        return MinGRU(**common)
    if cell == "minlstm":
        return MinLSTM(**common)
    return GRU(**common, reset_after=reset_after)


def input_embedding(
    vocab_size: int | None, input_size: int | None, embedding_dim: int, padding_idx: int | None
) -> tuple[nn.Embedding | None, int]:
    """(embedding, the recurrent layer's input size) for token ids or float features.

    The front every recurrent classifier / tagger shares: with ``vocab_size`` the inputs are token
    ids, embedded with ``padding_idx``; with ``input_size`` they are (N, L, F) features used as they
    are (no embedding). Exactly one of the two must be given.
    """
    if (vocab_size is None) == (input_size is None):
        raise ValueError(
            "give exactly one of vocab_size (token ids) or input_size (float features), "
            f"got vocab_size={vocab_size!r}, input_size={input_size!r}"
        )
    if vocab_size is None:
        return None, input_size
    return nn.Embedding(vocab_size, embedding_dim, padding_idx=padding_idx), embedding_dim
