"""One-to-many: a recurrent language model, trained with (truncated) BPTT and sampled step by step."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seqlab.models.outputs import LMOutput, RecurrentState
from seqlab.models.recurrent import recurrent_layer
from seqlab.models.registry import register_model

__all__ = ["LanguageModel", "detach_state"]


def detach_state(state: RecurrentState | None) -> RecurrentState | None:
    """Cut the graph behind a recurrent state (h_n, or (h_n, c_n)) for truncated BPTT.

    The values carry over to the next chunk, the gradient stops at the chunk boundary.
    """
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


@register_model
class LanguageModel(nn.Module):
    r"""Word- or character-level recurrent language model (Mikolov et al., 2010; Zaremba et al., 2014).

    .. math::
        x_t = \mathrm{Dropout}(E[w_t]), \qquad
        o_t, s_t = \mathrm{RNN}(x_t, s_{t-1}), \qquad
        p(w_{t+1} \mid w_{\le t}) = \mathrm{softmax}(W\,\mathrm{Dropout}(o_t) + b)

    As in Zaremba, Sutskever & Vinyals (2014), "Recurrent Neural Network Regularization",
    dropout acts only on the non-recurrent connections: the embeddings, between stacked layers
    and the top layer's outputs, never on the state carried through time. ``tie_weights=True``
    shares the embedding matrix with the output projection (Press & Wolf, 2017; Inan et al.,
    2017), which needs ``embedding_dim == hidden_size``. The loss is the mean next-token
    cross-entropy (targets equal to -100 are ignored); ``exp(loss)`` is the perplexity.

    For truncated BPTT feed consecutive chunks of a long stream, passing the returned state,
    detached with :func:`detach_state`, into the next call. The cell options (``nonlinearity``,
    ``init``, ``peephole``, ``coupled``, ``reset_after``) are those of
    :func:`~seqlab.models.recurrent_layer`.

    Shapes (N batch, L chunk length, V vocabulary, H hidden size):

    ========== ===============================================================
    ids        (N, L) long
    state      h_n, or (h_n, c_n) for LSTM, each (num_layers, N, H); None = zeros
    targets    (N, L) long, usually ``ids`` shifted left by one
    logits     (N, L, V)
    ========== ===============================================================
    """

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int,
        cell: str = "lstm",
        embedding_dim: int | None = None,
        num_layers: int = 1,
        dropout: float = 0.0,
        tie_weights: bool = False,
        nonlinearity: str = "tanh",
        init: str = "default",
        peephole: bool = False,
        coupled: bool = False,
        reset_after: bool = True,
    ) -> None:
        super().__init__()
        embedding_dim = hidden_size if embedding_dim is None else embedding_dim
        if tie_weights and embedding_dim != hidden_size:
            raise ValueError(
                "tie_weights=True needs embedding_dim == hidden_size, "
                f"got embedding_dim={embedding_dim}, hidden_size={hidden_size}"
            )
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.dropout = nn.Dropout(dropout)
        self.rnn = recurrent_layer(
            cell, embedding_dim, hidden_size, num_layers=num_layers, dropout=dropout,
            nonlinearity=nonlinearity, init=init, peephole=peephole, coupled=coupled,
            reset_after=reset_after,
        )
        self.head = nn.Linear(hidden_size, vocab_size)
        # Small uniform embeddings (as in Zaremba et al.) keep the initial logits near zero, which
        # matters when the same matrix is the output projection.
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        nn.init.zeros_(self.head.bias)
        if tie_weights:
            self.head.weight = self.embedding.weight

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of parameters (a tied embedding / output matrix counted once)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    detach_state = staticmethod(detach_state)

    def forward(
        self,
        ids: torch.Tensor,
        state: RecurrentState | None = None,
        targets: torch.Tensor | None = None,
    ) -> LMOutput:
        x = self.dropout(self.embedding(ids))  # (N, L, E)
        outputs, state = self.rnn(x, state)  # (N, L, H)
        logits = self.head(self.dropout(outputs))  # (N, L, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(
                logits.reshape(-1, self.vocab_size),  # (N * L, V)
                targets.reshape(-1),  # (N * L,)
                ignore_index=-100,
            )
        return LMOutput(logits=logits, loss=loss, state=state, hidden=outputs)

    @torch.no_grad()
    def generate(
        self,
        prompt_ids: torch.Tensor | list[int],
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Continue ``prompt_ids`` (N, P), or one prompt as a list of ids, by ``max_new_tokens``.

        The prompt is read once; then each new token is fed alone together with the carried state,
        so a step costs one recurrent step, not a pass over the whole prefix. Tokens are chosen by
        :func:`seqlab.decode.sampling.sample_next_token` (``temperature=0`` is greedy). Runs in eval
        mode (no dropout) and restores the previous mode. Returns (N, P + max_new_tokens), prompt
        included. :meth:`stream` yields the same tokens one by one.
        """
        # decode sits above models in the dependency order; sampling is plain tensor math, and
        # importing it here keeps `import seqlab.models` free of any decode import cycle.
        from seqlab.decode.sampling import prompt_batch

        prompt_ids = prompt_batch(prompt_ids, max_new_tokens, self.head.weight.device)  # (N, P)
        new = self.stream(prompt_ids, max_new_tokens, temperature, top_k, top_p, generator)
        return torch.cat([prompt_ids, *(token[:, None] for token in new)], dim=1)

    @torch.no_grad()
    def stream(self, prompt_ids, max_new_tokens: int, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None,
               generator: torch.Generator | None = None):
        """Yield each new token (N,) of :meth:`generate` as soon as it is drawn."""
        from seqlab.decode.sampling import prompt_batch, sample_next_token

        prompt_ids = prompt_batch(prompt_ids, max_new_tokens, self.head.weight.device)  # (N, P)
        was_training = self.training
        self.eval()
        try:
            out = self(prompt_ids)
            for step in range(max_new_tokens):
                next_token = sample_next_token(
                    out.logits[:, -1], temperature=temperature, top_k=top_k, top_p=top_p,
                    generator=generator,
                )  # (N,)
                yield next_token
                if step + 1 < max_new_tokens:
                    out = self(next_token.unsqueeze(1), out.state)
        finally:
            self.train(was_training)
