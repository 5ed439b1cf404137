"""Transformer models: encoder-only (BERT), decoder-only (GPT) and encoder-decoder (translation).

The file reads bottom-up: the embedding (tokens + positions), the encoder body and its three
heads (:class:`TransformerClassifier`, :class:`TransformerTagger`, :class:`TransformerMaskedLM`),
the causal language model :class:`TransformerLM` with key/value-cache generation, and
:class:`TransformerSeq2Seq`, which offers the same ``encode / init_state / step`` API as
:class:`seqlab.models.Seq2Seq` so :func:`seqlab.decode.greedy_decode` and
:func:`seqlab.decode.beam_search` drive it.

Papers: Vaswani et al. (2017) "Attention Is All You Need" (encoder-decoder, sinusoids, sqrt(E)
embedding scale, shared output matrix); Devlin et al. (2019) "BERT" (post-norm encoder, token
types, [CLS] pooler, masked-LM head); Radford et al. (2019) "GPT-2" (pre-norm causal decoder,
learned positions, final LayerNorm, tied output matrix).

Shapes (used in every docstring of this file):

    N  batch size (sentences, or sentences x beams while searching)
    L  input length; S source length; T target length (BOS ... EOS)
    V  vocabulary size; C number of classes; E = d_model; h heads
    attention_mask (N, L): 1 / True at real tokens, 0 / False at padding (Hugging Face's form);
    lengths (N,): right padding, the same information.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from seqlab.models.outputs import ClassifierOutput, LMOutput, TaggerOutput
from seqlab.models.registry import register_model
from seqlab.models.seq2seq import Seq2SeqOutput, StepModelMixin
from seqlab.nn.positional import (
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
)
from seqlab.nn.transformer import (
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
    activation_function,
)

if TYPE_CHECKING:
    from seqlab.decode.kv_cache import KVCache

__all__ = [
    "POOLINGS",
    "POSITIONALS",
    "TransformerAttentions",
    "TransformerClassifier",
    "TransformerEmbedding",
    "TransformerEncoderModel",
    "TransformerLM",
    "TransformerMaskedLM",
    "TransformerMemory",
    "TransformerSeq2Seq",
    "TransformerTagger",
    "padding_mask",
]

POSITIONALS = ("learned", "sinusoidal", "rotary")
POOLINGS = ("cls", "mean", "last")


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} should be one of {', '.join(map(repr, allowed))}, got {value!r}")


def padding_mask(
    input_ids: torch.Tensor,
    lengths: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """(N, L) bool, True at padding (attention's key_padding_mask), from `attention_mask`
    (1 = real token) or right-padding `lengths`; None when neither is given (no padding)."""
    if attention_mask is not None:
        return attention_mask.to(input_ids.device) == 0
    if lengths is not None:
        positions = torch.arange(input_ids.size(1), device=input_ids.device)
        return positions[None, :] >= lengths.to(input_ids.device)[:, None]  # (N, L)
    return None


def _stack_weights(weights: list[torch.Tensor] | None) -> tuple[torch.Tensor, ...] | None:
    return None if weights is None else tuple(weights)


class TransformerEmbedding(nn.Module):
    r"""Token embedding + position (+ token type), then an optional LayerNorm and dropout.

    .. math::
        x_t = \mathrm{Drop}(\mathrm{LN}(s \cdot E[w_t] + P_t + T[\mathrm{type}_t]))

    with s = sqrt(E) when ``scale_embeddings`` (Vaswani et al.), P learned, sinusoidal or absent
    (``"rotary"`` positions act inside attention instead), T present when ``type_vocab_size`` > 0
    (BERT's segments) and LN when ``layer_norm`` (BERT).

    ================ ================
    input_ids        (N, L) long
    token_type_ids   (N, L) long or None (all 0)
    output           (N, L, E)
    ================ ================
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        max_length: int = 1024,
        positional: str = "learned",
        type_vocab_size: int = 0,
        layer_norm: bool = False,
        layer_norm_eps: float = 1e-5,
        dropout: float = 0.0,
        scale_embeddings: bool = False,
        padding_idx: int | None = None,
    ) -> None:
        super().__init__()
        _check_choice("positional", positional, POSITIONALS)
        self.token = nn.Embedding(vocab_size, d_model, padding_idx=padding_idx)
        self.scale = math.sqrt(d_model) if scale_embeddings else 1.0
        self.max_length = max_length
        if positional == "learned":
            self.position = LearnedPositionalEmbedding(d_model, max_length)
        elif positional == "sinusoidal":
            self.position = SinusoidalPositionalEncoding(d_model, max_length)
        else:
            self.position = None
        self.token_type = nn.Embedding(type_vocab_size, d_model) if type_vocab_size > 0 else None
        self.norm = nn.LayerNorm(d_model, eps=layer_norm_eps) if layer_norm else None
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        offset: int = 0,
    ) -> torch.Tensor:
        if offset + input_ids.size(1) > self.max_length:
            raise ValueError(
                f"positions up to {offset + input_ids.size(1)} exceed max_length="
                f"{self.max_length}; shorten the input or raise max_length"
            )
        x = self.token(input_ids)  # (N, L, E)
        if self.scale != 1.0:
            x = x * self.scale
        if self.position is not None:
            x = self.position(x, offset=offset)
        if self.token_type is not None:
            if token_type_ids is None:
                token_type_ids = torch.zeros_like(input_ids)
            x = x + self.token_type(token_type_ids)
        if self.norm is not None:
            x = self.norm(x)
        return self.dropout(x)


@register_model
class TransformerEncoderModel(nn.Module):
    r"""Encoder-only body: embedding + a stack of bidirectional self-attention layers.

    Every position attends to every real (non-padding) position, so padding never changes the
    outputs at real positions. Pre-norm stacks (``norm_first=True``) end with a LayerNorm;
    ``norm_first=False, embedding_norm=True, activation="gelu"`` is BERT's layout.

    ============== ===========================================================
    input_ids      (N, L) long
    padding        (N, L) bool, True at padding (see :func:`padding_mask`), or None
    token_type_ids (N, L) long or None
    hidden         (N, L, E); weights, when asked: one (N, h, L, L) per layer
    ============== ===========================================================
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 256,
        nhead: int = 4,
        num_layers: int = 4,
        dim_feedforward: int | None = None,
        dropout: float = 0.1,
        activation: str = "gelu",
        norm_first: bool = True,
        positional: str = "learned",
        max_length: int = 512,
        type_vocab_size: int = 0,
        embedding_norm: bool = False,
        layer_norm_eps: float = 1e-5,
        padding_idx: int | None = 0,
    ) -> None:
        super().__init__()
        _check_choice("positional", positional, POSITIONALS)
        self.d_model = d_model
        self.embedding = TransformerEmbedding(
            vocab_size, d_model, max_length=max_length, positional=positional,
            type_vocab_size=type_vocab_size, layer_norm=embedding_norm,
            layer_norm_eps=layer_norm_eps, dropout=dropout, padding_idx=padding_idx,
        )
        rotary = RotaryEmbedding(d_model // nhead) if positional == "rotary" else None
        layer = TransformerEncoderLayer(
            d_model, nhead, dim_feedforward or 4 * d_model, dropout=dropout,
            activation=activation, layer_norm_eps=layer_norm_eps, batch_first=True,
            norm_first=norm_first, rotary=rotary,
        )
        norm = nn.LayerNorm(d_model, eps=layer_norm_eps) if norm_first else None
        self.encoder = TransformerEncoder(layer, num_layers, norm=norm)

    def forward(
        self,
        input_ids: torch.Tensor,
        padding: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """input_ids (N, L), padding (N, L) bool True at padding -> hidden (N, L, E), weights."""
        x = self.embedding(input_ids, token_type_ids)  # (N, L, E)
        return self.encoder(x, src_key_padding_mask=padding, need_weights=need_weights)


@register_model
class TransformerClassifier(nn.Module):
    r"""Sequence classification on a Transformer encoder (many-to-one).

    .. math::
        f = \tanh(W_p h_1 + b_p) \ (\texttt{"cls"}, \text{BERT's pooler on the first token})
        \ \text{or}\ \tfrac{1}{|valid|}\textstyle\sum_{t\ valid} h_t \ (\texttt{"mean"})
        \ \text{or}\ h_{last\ valid} \ (\texttt{"last"}), \qquad
        \mathrm{logits} = W\,\mathrm{Drop}(f) + b

    Args:
        encoder: the :class:`TransformerEncoderModel` body.
        num_classes: C; 0 builds no head (a sentence encoder: the output's ``pooled``). pooling: one of :data:`POOLINGS`. dropout: on the pooled features.

    ========== =====================================
    input_ids  (N, L) long
    targets    (N,) long class ids
    logits     (N, C)
    ========== =====================================
    """

    def __init__(
        self,
        encoder: TransformerEncoderModel,
        num_classes: int,
        pooling: str = "cls",
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        _check_choice("pooling", pooling, POOLINGS)
        self.pooling = pooling
        self.encoder = encoder
        d_model = encoder.d_model
        self.pooler = nn.Linear(d_model, d_model) if pooling == "cls" else None
        self.dropout = nn.Dropout(dropout)
        # num_classes=0: no head, a sentence encoder whose output is the pooled vector.
        self.head = nn.Linear(d_model, num_classes) if num_classes > 0 else None

    def forward(
        self,
        input_ids: torch.Tensor,
        lengths: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> ClassifierOutput:
        padding = padding_mask(input_ids, lengths, attention_mask)
        hidden, weights = self.encoder(input_ids, padding, token_type_ids, output_attentions)
        if self.pooling == "cls":
            features = torch.tanh(self.pooler(hidden[:, 0]))  # (N, E)
        else:
            valid = (
                torch.ones(hidden.shape[:2], device=hidden.device)
                if padding is None
                else (~padding).to(hidden.dtype)
            )  # (N, L)
            if self.pooling == "mean":
                features = (hidden * valid[..., None]).sum(1) / valid.sum(1, keepdim=True)  # (N, E)
            else:  # the last real token
                last = valid.sum(1).long() - 1  # (N,)
                features = hidden[torch.arange(hidden.size(0), device=hidden.device), last]
        if self.head is None:
            return ClassifierOutput(logits=None, hidden=hidden, pooled=features)
        logits = self.head(self.dropout(features))  # (N, C)
        loss = None if targets is None else F.cross_entropy(logits, targets)
        return ClassifierOutput(
            logits=logits, loss=loss, attentions=_stack_weights(weights), hidden=hidden,
            pooled=features,
        )


@register_model
class TransformerTagger(nn.Module):
    r"""One label per token on a Transformer encoder (many-to-many aligned).

    logits_t = W Drop(h_t) + b; the loss is the cross-entropy averaged over real tokens
    (padding and targets equal to -100 are ignored). `encoder` is the
    :class:`TransformerEncoderModel` body; `dropout` acts on its outputs.

    ========== =================
    input_ids  (N, L) long
    targets    (N, L) long
    logits     (N, L, C)
    ========== =================
    """

    def __init__(
        self, encoder: TransformerEncoderModel, num_tags: int, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.d_model, num_tags)

    def forward(
        self,
        input_ids: torch.Tensor,
        lengths: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> TaggerOutput:
        padding = padding_mask(input_ids, lengths, attention_mask)
        hidden, weights = self.encoder(input_ids, padding, need_weights=output_attentions)
        logits = self.head(self.dropout(hidden))  # (N, L, C)
        loss = None
        if targets is not None:
            if padding is not None:
                targets = targets.masked_fill(padding, -100)
            loss = F.cross_entropy(
                logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100
            )
        return TaggerOutput(
            logits=logits, loss=loss, attentions=_stack_weights(weights), hidden=hidden
        )


@register_model
class TransformerMaskedLM(nn.Module):
    r"""Masked language model on a Transformer encoder (BERT's pre-training objective).

    .. math::
        z_t = \mathrm{LN}(\mathrm{act}(W_t h_t + b_t)), \qquad
        \mathrm{logits}_t = E\,z_t + b

    with E the (tied) token embedding matrix. The loss is the cross-entropy over the positions
    whose target is not -100 (the masked ones). `encoder` is the
    :class:`TransformerEncoderModel` body whose token embedding E is reused; `activation` (a
    name from :data:`seqlab.nn.transformer.ACTIVATIONS`) and `layer_norm_eps` are the head's.

    ========== =================================================
    input_ids  (N, L) long, with some tokens replaced by [MASK]
    targets    (N, L) long: the original token where masked, -100 elsewhere
    positions  (N, L) bool, optional: score only these positions
    logits     (N, L, V); (K, V) for the K True ``positions``, in row-major order
    ========== =================================================

    Pre-training needs the logits only where tokens were chosen: with ``positions`` (the
    task passes ``targets != -100``) the head runs on those ~15 % of the hidden vectors, which
    for an 8,000-token vocabulary nearly halves the time of a training step.
    """

    def __init__(
        self,
        encoder: TransformerEncoderModel,
        activation: str = "gelu",
        layer_norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        d_model = encoder.d_model
        token = encoder.embedding.token
        self.transform = nn.Linear(d_model, d_model)
        self.activation = activation_function(activation)
        self.norm = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.decoder = nn.Linear(d_model, token.num_embeddings)
        self.decoder.weight = token.weight
        # The tied matrix scores normalised vectors of length ~sqrt(E): entries of size
        # 1/sqrt(E) start the logits near unit scale (torch's N(0, 1) would start them at
        # ~sqrt(E) and the loss far above log V). Learned positions and token types get the same
        # scale, or they would drown the tokens in the encoder's input.
        embedding = encoder.embedding
        tables = [token, getattr(embedding.position, "embedding", None), embedding.token_type]
        for table in tables:
            if table is not None:
                nn.init.normal_(table.weight, std=d_model**-0.5)
        if token.padding_idx is not None:
            nn.init.zeros_(token.weight[token.padding_idx])

    def forward(
        self,
        input_ids: torch.Tensor,
        lengths: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        output_attentions: bool = False,
        positions: torch.Tensor | None = None,
    ) -> LMOutput:
        padding = padding_mask(input_ids, lengths, attention_mask)
        hidden, weights = self.encoder(input_ids, padding, token_type_ids, output_attentions)
        scored = hidden if positions is None else hidden[positions]  # (N, L, E) or (K, E)
        logits = self.decoder(self.norm(self.activation(self.transform(scored))))  # (·, V)
        loss = None
        if targets is not None:
            if positions is not None:
                targets = targets[positions]  # (K,)
            loss = F.cross_entropy(
                logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100
            )
        return LMOutput(
            logits=logits, loss=loss, attentions=_stack_weights(weights), hidden=hidden
        )


@register_model
class TransformerLM(nn.Module):
    r"""Decoder-only causal language model (GPT-2 layout).

    .. math::
        h^0 = \mathrm{Drop}(E[w_t] + P_t), \quad h^l = \mathrm{Block}_l(h^{l-1})
        \text{ (pre-norm, causal)}, \quad
        p(w_{t+1} \mid w_{\le t}) = \mathrm{softmax}(W\,\mathrm{LN}(h^{L}_t))

    with W = E when ``tie_weights``. Like :class:`~seqlab.models.LanguageModel`, ``targets`` are
    the next tokens (usually ``ids`` shifted left by one; -100 is ignored).

    ``state`` is the key/value cache (:class:`~seqlab.decode.kv_cache.KVCache`, from
    :meth:`new_cache`): with one, the call reads only the new tokens, appends their keys and
    values to the cache and returns it as ``state``; :meth:`generate` uses it so each new token
    costs one position, not the whole prefix. Without one (training) ``state`` stays None, so
    the call signature is that of the recurrent :class:`~seqlab.models.LanguageModel`
    (``model(ids, state=..., targets=...)``) and code that carries its state works unchanged;
    each call then sees only its own chunk of context.

    ================ =====================================================
    input_ids        (N, L) long (the new tokens when a cache is passed)
    attention_mask   (N, L) or (N, cached + L) with a cache; 1 = real token
    targets          (N, L) long
    logits           (N, L, V); attentions: one (N, h, L, S) per layer
    ================ =====================================================
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 256,
        nhead: int = 4,
        num_layers: int = 4,
        dim_feedforward: int | None = None,
        dropout: float = 0.1,
        activation: str = "gelu_tanh",
        positional: str = "learned",
        max_length: int = 1024,
        layer_norm_eps: float = 1e-5,
        tie_weights: bool = True,
        bias: bool = True,
    ) -> None:
        super().__init__()
        _check_choice("positional", positional, POSITIONALS)
        self.vocab_size = vocab_size
        self.num_layers = num_layers
        self.max_length = max_length
        self.embedding = TransformerEmbedding(
            vocab_size, d_model, max_length=max_length, positional=positional, dropout=dropout
        )
        rotary = RotaryEmbedding(d_model // nhead) if positional == "rotary" else None
        layer = TransformerEncoderLayer(
            d_model, nhead, dim_feedforward or 4 * d_model, dropout=dropout,
            activation=activation, layer_norm_eps=layer_norm_eps, batch_first=True,
            norm_first=True, bias=bias, rotary=rotary,
        )
        self.blocks = TransformerEncoder(
            layer, num_layers, norm=nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        )
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        if tie_weights:
            self.head.weight = self.embedding.token.weight
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # GPT-2's N(0, 0.02) for embeddings and linear layers, zero biases: the first logits are
        # small. The stacked q/k/v projection keeps torch.nn.MultiheadAttention's Xavier-uniform
        # start (std 0.0625 at width 128), and the residual projections are not scaled down by
        # 1/sqrt(2 L) as in GPT-2: on tinyshakespeare (4 layers, width 128, 2000 steps) this
        # reached 1.844 nats/char against 1.916 with GPT-2's full scheme (benchmarks/RESULTS.md).
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of parameters (a tied embedding / output matrix counted once)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def new_cache(self) -> KVCache:
        """An empty key/value cache with one entry per layer."""
        # decode sits above models in the dependency order; the import stays local, as for
        # sampling in LanguageModel.generate.
        from seqlab.decode.kv_cache import KVCache

        return KVCache(self.num_layers)

    def forward(
        self,
        input_ids: torch.Tensor,
        state: KVCache | None = None,
        targets: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> LMOutput:
        offset = 0 if state is None else state.length
        padding = padding_mask(input_ids, lengths, attention_mask)
        x = self.embedding(input_ids, offset=offset)  # (N, L, E)
        hidden, weights = self.blocks(
            x, src_key_padding_mask=padding, is_causal=True, need_weights=output_attentions,
            kv_cache=state, position_offset=offset,
        )
        logits = self.head(hidden)  # (N, L, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(
                logits.reshape(-1, self.vocab_size), targets.reshape(-1), ignore_index=-100
            )
        return LMOutput(
            logits=logits, loss=loss, state=state, attentions=_stack_weights(weights),
            hidden=hidden,
        )

    @property
    def context_length(self) -> int:
        """The positions left to real tokens: ``max_length``, less those a soft prompt (prompt
        tuning) takes in front of them. A sliding window or a chat history fits in this."""
        return self.max_length - sum(getattr(m, "positions_taken", 0) for m in self.modules())

    @torch.no_grad()
    def generate(
        self,
        prompt_ids: torch.Tensor | list[int],
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """Continue ``prompt_ids`` (N, P), or one prompt as a list of ids, by ``max_new_tokens``.

        With ``use_cache`` the prompt is read once and each new token alone after it (keys and
        values of the past come from the cache); without, every step re-reads the whole
        sequence. Both give the same tokens. Once the sequence outgrows the ``max_length``
        positions, both read a sliding window of the last :attr:`context_length` tokens (the
        cache cannot slide: learned and sinusoidal positions would shift). Tokens are chosen
        by :func:`seqlab.decode.sampling.sample_next_token` (``temperature=0`` is greedy). Runs
        in eval mode and restores the previous mode. Returns (N, P + max_new_tokens).
        :meth:`stream` yields the same tokens one by one.
        """
        from seqlab.decode.sampling import prompt_batch

        prompt_ids = prompt_batch(prompt_ids, max_new_tokens, self.head.weight.device)  # (N, P)
        new = self.stream(prompt_ids, max_new_tokens, temperature, top_k, top_p, generator,
                          use_cache=use_cache)
        return torch.cat([prompt_ids, *(token[:, None] for token in new)], dim=1)

    @torch.no_grad()
    def stream(self, prompt_ids, max_new_tokens: int, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None,
               generator: torch.Generator | None = None, use_cache: bool = True):
        """Yield each new token (N,) of :meth:`generate` as soon as it is drawn."""
        from seqlab.decode.sampling import prompt_batch, windowed_stream

        prompt_ids = prompt_batch(prompt_ids, max_new_tokens, self.head.weight.device)  # (N, P)

        def forward(ids, cache):
            return self(ids, state=cache).logits[:, -1], cache  # the cache is filled in place

        was_training = self.training
        self.eval()
        try:
            yield from windowed_stream(
                forward, prompt_ids, max_new_tokens, self.context_length,
                cache=self.new_cache() if use_cache else None, capacity=self.max_length,
                temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
        finally:
            self.train(was_training)


@dataclass
class TransformerMemory:
    """What the decoder reads from the source.

    outputs: (N, S, E) encoder outputs. padding: (N, S) bool, True at padding.
    lengths: (N,) source lengths.
    key_values: each decoder layer's cross-attention keys and values of `outputs`,
        (N, h, S, d) each, computed once so decoding steps do not project the source again.
    """

    outputs: torch.Tensor
    padding: torch.Tensor
    lengths: torch.Tensor
    key_values: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def index_select(self, index: torch.Tensor) -> TransformerMemory:
        """The memory of batch rows `index` (repeat a row to give each beam its copy)."""
        key_values = None
        if self.key_values is not None:
            key_values = [
                (key.index_select(0, index), value.index_select(0, index))
                for key, value in self.key_values
            ]
        return TransformerMemory(
            self.outputs.index_select(0, index),
            self.padding.index_select(0, index),
            self.lengths.index_select(0, index),
            key_values,
        )


@dataclass
class TransformerAttentions:
    """Every attention map of an encoder-decoder pass, one tensor per layer.

    encoder: (N, h, S, S) each; decoder_self: (N, h, T, T) each; decoder_cross: (N, h, T, S).
    """

    encoder: tuple[torch.Tensor, ...]
    decoder_self: tuple[torch.Tensor, ...]
    decoder_cross: tuple[torch.Tensor, ...]


@register_model
class TransformerSeq2Seq(StepModelMixin, nn.Module):
    r"""Encoder-decoder Transformer for translation (Vaswani et al. 2017), trained with teacher
    forcing and searched with the step API of :class:`seqlab.models.Seq2Seq`.

    .. math::
        m = \mathrm{Encoder}(\sqrt{E}\,E_{src}[x] + P), \qquad
        h = \mathrm{Decoder}(\sqrt{E}\,E_{tgt}[y_{<t}] + P,\ m), \qquad
        p(y_t \mid y_{<t}, x) = \mathrm{softmax}(W h_t + b)

    W = E_tgt when ``tie_weights`` (then b = 0); ``share_embeddings`` also uses one matrix for
    source and target (a joint vocabulary). The loss is the cross-entropy over non-padding
    target tokens, with optional label smoothing (the paper uses 0.1). ``norm_first=True``
    (pre-norm) trains without learning-rate warm-up; ``False`` is the paper's post-norm.

    Step API: ``encode(src, src_lengths) -> TransformerMemory``, ``init_state(memory) -> KVCache``,
    ``step(prev_tokens, state, memory) -> (log_probs (N, V), state, None)``, ``reorder_state``,
    ``reorder_memory``. A step feeds one token and reads the past from the cache.

    ============= ==========================================================
    src           (N, S) long, right padded with `pad_id`; src_lengths (N,)
    tgt           (N, T) long: BOS y_1 .. y_m EOS, then `pad_id`
    logits        (N, T-1, V), predictions for tgt[:, 1:]
    attentions    (N, T-1, S): last layer's cross-attention averaged over heads
    ============= ==========================================================
    """

    def __init__(
        self,
        source_vocab_size: int,
        target_vocab_size: int,
        d_model: int = 256,
        nhead: int = 4,
        num_encoder_layers: int = 3,
        num_decoder_layers: int = 3,
        dim_feedforward: int | None = None,
        dropout: float = 0.1,
        activation: str = "relu",
        norm_first: bool = True,
        positional: str = "sinusoidal",
        max_length: int = 512,
        share_embeddings: bool = False,
        tie_weights: bool = True,
        label_smoothing: float = 0.0,
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        _check_choice("positional", positional, POSITIONALS)
        if share_embeddings and source_vocab_size != target_vocab_size:
            raise ValueError(
                f"share_embeddings=True needs one vocabulary, got source_vocab_size="
                f"{source_vocab_size} and target_vocab_size={target_vocab_size}"
            )
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(
                f"label_smoothing should be a number in range [0, 1), got {label_smoothing!r}"
            )
        self.pad_id = pad_id
        self.label_smoothing = label_smoothing
        self.num_decoder_layers = num_decoder_layers
        embedding_args = {
            "max_length": max_length, "positional": positional, "dropout": dropout,
            "scale_embeddings": True, "padding_idx": pad_id,
        }
        self.source_embedding = TransformerEmbedding(source_vocab_size, d_model, **embedding_args)
        self.target_embedding = TransformerEmbedding(target_vocab_size, d_model, **embedding_args)
        if share_embeddings:
            self.target_embedding.token = self.source_embedding.token
        dim_feedforward = dim_feedforward or 4 * d_model
        head_dim = d_model // nhead
        final_norm = nn.LayerNorm(d_model) if norm_first else None
        self.encoder = TransformerEncoder(
            TransformerEncoderLayer(
                d_model, nhead, dim_feedforward, dropout, activation, batch_first=True,
                norm_first=norm_first,
                rotary=RotaryEmbedding(head_dim) if positional == "rotary" else None,
            ),
            num_encoder_layers,
            norm=final_norm,
        )
        self.decoder = TransformerDecoder(
            TransformerDecoderLayer(
                d_model, nhead, dim_feedforward, dropout, activation, batch_first=True,
                norm_first=norm_first,
                rotary=RotaryEmbedding(head_dim) if positional == "rotary" else None,
            ),
            num_decoder_layers,
            norm=nn.LayerNorm(d_model) if norm_first else None,
        )
        self.out = nn.Linear(d_model, target_vocab_size, bias=not tie_weights)
        if tie_weights:
            self.out.weight = self.target_embedding.token.weight
        for name, parameter in self.named_parameters():
            # Xavier for matrices as in the reference implementation; embeddings then have
            # entries of size ~1/sqrt(E), which the sqrt(E) scale brings back to ~1.
            if parameter.dim() > 1 and "norm" not in name:
                nn.init.xavier_uniform_(parameter)

    def _encode(self, src, src_lengths, need_weights=False):
        if src.dim() != 2:
            raise ValueError(f"src should be (N, S) token ids, got shape {tuple(src.shape)}")
        src_lengths = src_lengths.to(device=src.device, dtype=torch.long)
        if int(src_lengths.min()) < 1 or int(src_lengths.max()) > src.size(1):
            raise ValueError(
                f"src_lengths should lie in [1, {src.size(1)}] (the padded source length), got "
                f"min {int(src_lengths.min())} and max {int(src_lengths.max())}"
            )
        padding = padding_mask(src, lengths=src_lengths)  # (N, S)
        x = self.source_embedding(src)  # (N, S, E)
        outputs, weights = self.encoder(x, src_key_padding_mask=padding, need_weights=need_weights)
        return TransformerMemory(outputs, padding, src_lengths), weights

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> TransformerMemory:
        """Run the encoder: src (N, S), src_lengths (N,) -> :class:`TransformerMemory`, with each
        decoder layer's cross-attention keys and values computed once for all steps."""
        memory = self._encode(src, src_lengths)[0]
        memory.key_values = [
            layer.multihead_attn.project_key_value(memory.outputs, memory.outputs)
            for layer in self.decoder.layers
        ]
        return memory

    def init_state(self, memory: TransformerMemory) -> KVCache:
        """An empty key/value cache for the decoder's self-attention."""
        from seqlab.decode.kv_cache import KVCache

        return KVCache(self.num_decoder_layers)

    def step(
        self, prev_tokens: torch.Tensor, state: KVCache, memory: TransformerMemory
    ) -> tuple[torch.Tensor, KVCache, None]:
        """One step: prev_tokens (N,) -> log_probs (N, V), the grown cache, None."""
        offset = state.length
        x = self.target_embedding(prev_tokens[:, None], offset=offset)  # (N, 1, E)
        hidden, _, _ = self.decoder(
            x, memory.outputs, memory_key_padding_mask=memory.padding, kv_cache=state,
            position_offset=offset, memory_key_values=memory.key_values,
        )  # (N, 1, E); one query after the cached past needs no causal mask
        logits = self.out(hidden[:, 0])  # (N, V)
        return torch.log_softmax(logits, dim=-1), state, None

    def _decode(self, inputs, memory, need_weights=False):
        target_padding = inputs == self.pad_id  # (N, T-1)
        # BOS may share the padding id in some vocabularies; the first position is always real.
        target_padding[:, 0] = False
        x = self.target_embedding(inputs)  # (N, T-1, E)
        return self.decoder(
            x, memory.outputs, tgt_key_padding_mask=target_padding,
            memory_key_padding_mask=memory.padding, tgt_is_causal=True,
            need_weights=need_weights,
        )

    def forward(
        self,
        src: torch.Tensor,
        src_lengths: torch.Tensor,
        tgt: torch.Tensor,
        return_attentions: bool = False,
    ) -> Seq2SeqOutput:
        if tgt.dim() != 2 or tgt.size(1) < 2:
            raise ValueError(
                f"tgt should be (N, T) with T >= 2 (BOS ... EOS), got shape {tuple(tgt.shape)}"
            )
        memory, _ = self._encode(src, src_lengths)
        inputs, targets = tgt[:, :-1], tgt[:, 1:]  # (N, T-1) each
        hidden, _, cross = self._decode(inputs, memory, need_weights=return_attentions)
        logits = self.out(hidden)  # (N, T-1, V)
        loss = F.cross_entropy(
            logits.reshape(-1, logits.size(-1)),  # (N * (T-1), V)
            targets.reshape(-1),
            ignore_index=self.pad_id,
            label_smoothing=self.label_smoothing,
        )
        attentions = cross[-1].mean(dim=1) if return_attentions else None  # (N, T-1, S)
        return Seq2SeqOutput(logits=logits, loss=loss, attentions=attentions)

    @torch.no_grad()
    def attention_maps(
        self, src: torch.Tensor, src_lengths: torch.Tensor, tgt: torch.Tensor
    ) -> TransformerAttentions:
        """Every layer's and head's attention weights for one teacher-forced pass (tgt[:, :-1])."""
        memory, encoder_weights = self._encode(src, src_lengths, need_weights=True)
        _, self_weights, cross_weights = self._decode(tgt[:, :-1], memory, need_weights=True)
        return TransformerAttentions(
            tuple(encoder_weights), tuple(self_weights), tuple(cross_weights)
        )
