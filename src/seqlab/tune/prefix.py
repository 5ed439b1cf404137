"""Prefix tuning: learned keys and values that every attention layer reads before the real ones.

Li & Liang (2021), "Prefix-Tuning: Optimizing Continuous Prompts for Generation". Each
self-attention layer l gets P (``num_virtual_tokens``) learned key and value vectors per head,
prepended to the keys and values of the real tokens:

    K_l = [P^K_l ; X W_k],   V_l = [P^V_l ; X W_v],   out = softmax(Q K_l^T / sqrt(d) + B) V_l

No weight of the model changes; every real position may look at all P prefix positions (the
padding mask gains P "real" columns; a causal mask stays bottom-right aligned, so a query at t
sees the prefix and keys <= t). The prefix is what the model would hold in its key/value cache
after reading P tokens, so it works with cached generation: the cache keeps the real tokens and
each step reads the prefix in front of them (positions of real tokens do not shift).

With ``reparameterize=True`` the prefix comes from a small MLP, as in the paper (training is
more stable), P^{K,V} = W_2 tanh(W_1 E + b_1) + b_2 with E (P, E) learned; without, the keys and
values are learned directly, N(0, 1) at the start as in PEFT.

Recurrent models have no keys and values; the analogue is the state they start from: a learned
initial state h_0 (and c_0 for an LSTM) per layer and direction, zero at the start (the base
model's own h_0), used whenever the call passes no state.

The model's layers are not edited: forward pre-hooks on each ``self_attn`` (or recurrent layer)
pass the prefix through the ``kv_cache`` argument (or ``hx``).

Shapes: N batch, h heads, d head size, P virtual tokens, E = h·d; keys and values (N, h, P, d).
"""

from __future__ import annotations

import torch
from torch import nn

from seqlab.nn.multihead import MultiheadAttention
from seqlab.nn.transformer import TransformerDecoderLayer, TransformerEncoderLayer
from seqlab.tune.base import TuningModule

__all__ = ["PrefixEncoder", "PrefixState", "PrefixedCache", "apply_prefix", "prefix_from_prompt"]


class PrefixedCache:
    """Stands in for a layer's key/value cache: returns the prefix in front of the real keys.

    `inner` is the real cache of that layer (generation), or None (a full pass).
    """

    def __init__(self, key: torch.Tensor, value: torch.Tensor, inner=None) -> None:
        self.key, self.value, self.inner = key, value, inner

    def update(self, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.inner is not None:
            key, value = self.inner.update(key, value)  # (N, h, S, d)
        return torch.cat([self.key, key], dim=-2), torch.cat([self.value, value], dim=-2)


class PrefixEncoder(TuningModule):
    """The prefix keys and values of every attention layer.

    Direct form: ``key_values`` (layers, 2, h, P, d). Re-parameterised: ``embedding`` (P, E) and
    ``mlp`` E -> hidden_size -> layers·2·E (each layer reads its own rows of the last matrix).
    """

    def __init__(
        self, num_layers: int, num_heads: int, head_dim: int, num_virtual_tokens: int,
        reparameterize: bool = False, hidden_size: int = 512,
    ) -> None:
        super().__init__()
        self.num_layers, self.num_heads, self.head_dim = num_layers, num_heads, head_dim
        self.num_virtual_tokens = num_virtual_tokens
        self.reparameterize = reparameterize
        embed_dim = num_heads * head_dim
        if reparameterize:
            self.embedding = nn.Parameter(torch.randn(num_virtual_tokens, embed_dim))
            self.mlp = nn.Sequential(
                nn.Linear(embed_dim, hidden_size), nn.Tanh(),
                nn.Linear(hidden_size, num_layers * 2 * embed_dim),
            )
        else:
            self.key_values = nn.Parameter(
                torch.randn(num_layers, 2, num_heads, num_virtual_tokens, head_dim)
            )

    def layer(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of layer `index`, (h, P, d) each."""
        if not self.reparameterize:
            return self.key_values[index, 0], self.key_values[index, 1]
        hidden = self.mlp[1](self.mlp[0](self.embedding))  # (P, hidden)
        last = self.mlp[2]
        size = 2 * self.num_heads * self.head_dim
        rows = slice(index * size, (index + 1) * size)
        out = torch.nn.functional.linear(hidden, last.weight[rows], last.bias[rows])  # (P, 2E)
        out = out.view(self.num_virtual_tokens, 2, self.num_heads, self.head_dim)
        out = out.permute(1, 2, 0, 3)  # (2, h, P, d)
        return out[0], out[1]


class _AttentionPrefixHook:
    """Forward pre-hook of one self-attention module: pass the prefix as its cache."""

    def __init__(self, encoder: PrefixEncoder, index: int) -> None:
        self.encoder, self.index = encoder, index

    def __call__(self, module: MultiheadAttention, args: tuple, kwargs: dict):
        if self.encoder.disabled:
            return None
        query = args[0] if args else kwargs["query"]
        batch = query.size(0) if module.batch_first else query.size(1)
        key, value = self.encoder.layer(self.index)  # (h, P, d)
        key = key.to(query.dtype).unsqueeze(0).expand(batch, -1, -1, -1)  # (N, h, P, d)
        value = value.to(query.dtype).unsqueeze(0).expand(batch, -1, -1, -1)
        kwargs = dict(kwargs)
        kwargs["kv_cache"] = PrefixedCache(key, value, kwargs.get("kv_cache"))
        prefix = self.encoder.num_virtual_tokens
        padding = kwargs.get("key_padding_mask")
        if padding is not None:
            # The prefix is real: False (bool) or 0 (float) in front of each row.
            front = padding.new_zeros(padding.size(0), prefix)
            kwargs["key_padding_mask"] = torch.cat([front, padding], dim=1)  # (N, P + S)
        mask = kwargs.get("attn_mask")
        if mask is not None:
            front = mask.new_zeros(*mask.shape[:-1], prefix)
            kwargs["attn_mask"] = torch.cat([front, mask], dim=-1)  # (..., L, P + S)
        return args, kwargs


class PrefixState(TuningModule):
    """Learned initial states of a recurrent layer, (D·num_layers, H) each, zero at the start."""

    def __init__(self, rnn: nn.Module) -> None:
        super().__init__()
        rows = rnn.num_layers * (2 if rnn.bidirectional else 1)
        weight = next(rnn.parameters())
        self.h0 = nn.Parameter(weight.new_zeros(rows, rnn.hidden_size))
        self.c0 = nn.Parameter(weight.new_zeros(rows, rnn.hidden_size)) if rnn.mode == "LSTM" \
            else None

    def hook(self, module: nn.Module, args: tuple, kwargs: dict):
        """Forward pre-hook of the recurrent layer: the learned state when none is passed."""
        if self.disabled:
            return None
        hx = args[1] if len(args) > 1 else kwargs.get("hx")
        if hx is not None:
            return None
        x = args[0] if args else kwargs["input"]
        if isinstance(x, nn.utils.rnn.PackedSequence):
            batch, unbatched = int(x.batch_sizes[0]), False
        else:
            unbatched = x.dim() == 2
            batch = 1 if unbatched else x.size(0 if module.batch_first else 1)

        def expand(state: torch.Tensor) -> torch.Tensor:
            if unbatched:
                return state
            return state.unsqueeze(1).expand(-1, batch, -1).contiguous()  # (D·layers, N, H)

        state = expand(self.h0) if self.c0 is None else (expand(self.h0), expand(self.c0))
        kwargs = dict(kwargs)
        if len(args) > 2:
            kwargs["lengths"] = args[2]
        kwargs["hx"] = state
        return args[:1], kwargs


def _attention_layers(model: nn.Module) -> list[tuple[str, MultiheadAttention]]:
    """(name, self-attention) of every Transformer layer, in the order the model holds them."""
    return [
        (f"{name}.self_attn", layer.self_attn) for name, layer in model.named_modules()
        if isinstance(layer, TransformerEncoderLayer | TransformerDecoderLayer)
    ]


def _recurrent_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    from seqlab.nn.recurrent import _RecurrentLayer

    return [(n, m) for n, m in model.named_modules() if isinstance(m, _RecurrentLayer)]


def apply_prefix(
    model: nn.Module,
    num_virtual_tokens: int = 10,
    reparameterize: bool = False,
    hidden_size: int = 512,
) -> tuple[str, ...]:
    """Add prefix keys / values to every self-attention layer, or learned initial states to
    every recurrent layer; returns the layers it attached to."""
    if isinstance(num_virtual_tokens, bool) or not isinstance(num_virtual_tokens, int) or (
            num_virtual_tokens < 1):
        raise ValueError(
            f"num_virtual_tokens should be a positive integer, got {num_virtual_tokens!r}"
        )
    attentions = _attention_layers(model)
    if attentions:
        first = attentions[0][1]
        encoder = PrefixEncoder(
            len(attentions), first.num_heads, first.head_dim, num_virtual_tokens,
            reparameterize, hidden_size,
        ).to(first.in_proj_weight.device)
        model.add_module("prefix_tuning", encoder)
        for index, (_, attention) in enumerate(attentions):
            attention.register_forward_pre_hook(
                _AttentionPrefixHook(encoder, index), with_kwargs=True
            )
        return tuple(name for name, _ in attentions)
    recurrent = _recurrent_layers(model)
    if not recurrent:
        raise ValueError(
            f"prefix tuning needs self-attention layers or recurrent layers; "
            f"{type(model).__name__} has neither"
        )
    for _, rnn in recurrent:
        state = PrefixState(rnn)
        rnn.add_module("prefix_state", state)
        rnn.register_forward_pre_hook(state.hook, with_kwargs=True)
    return tuple(name for name, _ in recurrent)


@torch.no_grad()
def prefix_from_prompt(model: nn.Module, prompt_ids: torch.Tensor | list[int]) -> None:
    """Set a prefix-tuned :class:`~seqlab.models.TransformerLM`'s prefix to the keys and values
    its base model computes for `prompt_ids` (P ids): the model then behaves as if the prompt
    came first (Li & Liang's initialisation from real words' activations; the direct form only).
    """
    encoder = getattr(model, "prefix_tuning", None)
    if not isinstance(encoder, PrefixEncoder) or encoder.reparameterize:
        raise ValueError("prefix_from_prompt needs a model tuned with method='prefix' and "
                         "reparameterize=False")
    ids = torch.as_tensor(prompt_ids, device=encoder.key_values.device).reshape(1, -1)
    if ids.size(1) != encoder.num_virtual_tokens:
        raise ValueError(f"the prompt should have num_virtual_tokens={encoder.num_virtual_tokens} "
                         f"ids, got {ids.size(1)}")
    was_training, encoder.disabled = model.training, True
    model.eval()
    try:
        cache = model.new_cache()
        model(ids, state=cache)
    finally:
        encoder.disabled = False
        model.train(was_training)
    for index, layer in enumerate(cache.layers):
        encoder.key_values[index, 0] = layer.key[0]  # (h, P, d)
        encoder.key_values[index, 1] = layer.value[0]
