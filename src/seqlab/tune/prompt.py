"""Prompt tuning: learned vectors prepended to the input of a frozen model.

Lester, Al-Rfou & Constant (2021), "The Power of Scale for Parameter-Efficient Prompt Tuning".
P (``num_virtual_tokens``) soft-prompt vectors Z (P, E) go in front of the embedded input:

    X' = [Z ; X],   outputs at the P virtual positions are dropped,

so logits and targets keep their original length and alignment, and no weight of the model
changes. Z starts from (``init``):

=========== ======================================================================
random      N(0, σ²), σ the spread of the token embedding matrix
vocab       the embedded input of P token ids drawn at random from the vocabulary
text        the embedded input of ``init_text`` (ids, repeated or cut to length P)
=========== ======================================================================

"Embedded input" is what the stack of layers reads: in a Transformer, after token, position
(and token type) embeddings, LayerNorm and dropout; in a recurrent model, the token embedding.
In a Transformer the virtual tokens take positions 0..P-1 and the real tokens P..P+L-1 (as when
a text is prepended), so a prompt initialised from a text starts as that text.

Where it goes: the Transformer stack (``TransformerLM.blocks``, a ``TransformerEncoderModel``'s
``encoder``, a ``TransformerSeq2Seq``'s source encoder) or the input recurrent layer (``rnn``,
a recurrent seq2seq encoder's ``rnn``), through forward hooks; padding masks and ``lengths``
grow by P. With a key/value cache (generation) the prompt enters with the first call, and later
calls read it from the cache. A recurrent language model carrying its state over chunks sees
the prompt once, at the start of the stream (the first call without a state).

Shapes: N batch, L input length, P virtual tokens, E embedding size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from seqlab.tune.base import TuningModule

__all__ = ["INITS", "PromptEmbedding", "apply_prompt"]

INITS = ("random", "vocab", "text")


class PromptEmbedding(TuningModule):
    """The soft prompt Z (P, E), ``embeddings``, and the hooks that put it in front."""

    def __init__(self, vectors: torch.Tensor) -> None:
        super().__init__()
        self.embeddings = nn.Parameter(vectors.detach().clone())
        self.num_virtual_tokens = vectors.size(0)
        self._prepended = False

    @property
    def positions_taken(self) -> int:
        """The positions of a Transformer the prompt takes in front of the real tokens."""
        return 0 if self.disabled else self.num_virtual_tokens

    def _expand(self, batch: int, like: torch.Tensor) -> torch.Tensor:
        return self.embeddings.to(like.dtype).unsqueeze(0).expand(batch, -1, -1)  # (N, P, E)

    def embedding_hook(self, module: nn.Module, args: tuple, kwargs: dict):
        """Pre-hook of a TransformerEmbedding: real tokens start at position P when the prompt
        comes first (offset 0); with a cache, later calls already count the prompt."""
        if self.disabled:
            return None
        kwargs = dict(kwargs)
        names = ("input_ids", "token_type_ids", "offset")
        for name, value in zip(names[1:], args[1:]):
            kwargs[name] = value
        if kwargs.get("offset", 0) == 0:
            kwargs["offset"] = self.num_virtual_tokens
        return args[:1], kwargs

    def stack_pre_hook(self, module: nn.Module, args: tuple, kwargs: dict):
        """Pre-hook of a TransformerEncoder: [Z ; X] and P more real columns in the mask."""
        self._prepended = False
        if self.disabled:
            return None
        src = args[0] if args else kwargs["src"]
        kwargs = dict(kwargs)
        if len(args) > 1 or kwargs.get("mask") is not None:
            raise ValueError("prompt tuning handles padding masks only, not an attention mask")
        cache = kwargs.get("kv_cache")
        padding = kwargs.get("src_key_padding_mask")
        prompt = self.num_virtual_tokens
        if cache is None or cache.length == 0:
            src = torch.cat([self._expand(src.size(0), src), src], dim=1)  # (N, P + L, E)
            self._prepended = True
            if padding is not None:
                padding = torch.cat([padding.new_zeros(padding.size(0), prompt), padding], dim=1)
        elif padding is not None and padding.size(1) == cache.length + src.size(1) - prompt:
            # A mask over the real tokens only: the cached prompt is real too.
            padding = torch.cat([padding.new_zeros(padding.size(0), prompt), padding], dim=1)
        kwargs["src_key_padding_mask"] = padding
        return (src,), kwargs

    def stack_hook(self, module: nn.Module, args: tuple, kwargs: dict, output: tuple):
        """Post-hook of a TransformerEncoder: drop the outputs (and attention rows / columns)
        of the virtual positions."""
        if not self._prepended:
            return None
        self._prepended = False
        hidden, weights = output
        prompt = self.num_virtual_tokens
        if weights is not None:
            weights = [w[..., prompt:, prompt:] for w in weights]  # (N, h, L, L)
        return hidden[:, prompt:], weights  # (N, L, E)

    def recurrent_pre_hook(self, module: nn.Module, args: tuple, kwargs: dict):
        """Pre-hook of a recurrent layer: [Z ; X] and lengths + P, unless a state is passed."""
        self._prepended = False
        if self.disabled:
            return None
        x = args[0] if args else kwargs["input"]
        hx = args[1] if len(args) > 1 else kwargs.get("hx")
        lengths = args[2] if len(args) > 2 else kwargs.get("lengths")
        if hx is not None:
            return None
        if not torch.is_tensor(x) or x.dim() != 3 or not module.batch_first:
            raise ValueError("prompt tuning of a recurrent layer needs batch-first (N, L, E) "
                             "input tensors (not packed, not unbatched)")
        x = torch.cat([self._expand(x.size(0), x), x], dim=1)  # (N, P + L, E)
        if lengths is not None:
            lengths = torch.as_tensor(lengths) + self.num_virtual_tokens
        self._prepended = True
        return (x,), {**kwargs, "hx": None, "lengths": lengths}

    def recurrent_hook(self, module: nn.Module, args: tuple, kwargs: dict, output: tuple):
        """Post-hook of a recurrent layer: drop the outputs of the virtual steps; the final
        state, taken at each sequence's last real step, stays."""
        if not self._prepended:
            return None
        self._prepended = False
        outputs, state = output
        return outputs[:, self.num_virtual_tokens:], state  # (N, L, ·)


def _transformer_body(model: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """(embedding, stack) of the model's input Transformer, or None."""
    from seqlab.models import TransformerEncoderModel, TransformerLM, TransformerSeq2Seq

    if isinstance(model, TransformerLM):
        return model.embedding, model.blocks
    if isinstance(model, TransformerSeq2Seq):
        return model.source_embedding, model.encoder
    for module in model.modules():
        if isinstance(module, TransformerEncoderModel):
            return module.embedding, module.encoder
    return None


def _recurrent_body(model: nn.Module) -> tuple[nn.Module, nn.Module | None] | None:
    """(input recurrent layer, its token embedding or None) of a recurrent model, or None."""
    from seqlab.nn.recurrent import _RecurrentLayer

    for owner in (model, getattr(model, "encoder", None)):
        rnn = getattr(owner, "rnn", None)
        if isinstance(rnn, _RecurrentLayer):
            return rnn, getattr(owner, "embedding", None)
    return None


def _init_ids(init: str, vocab_size: int, num_virtual_tokens: int,
              init_text: Sequence[int] | None, device) -> torch.Tensor:
    if init == "vocab":
        return torch.randint(vocab_size, (num_virtual_tokens,), device=device)
    if not init_text:
        raise ValueError("prompt init='text' needs init_text, the token ids of a text")
    ids = torch.as_tensor(list(init_text), dtype=torch.long, device=device)
    if int(ids.min()) < 0 or int(ids.max()) >= vocab_size:
        raise ValueError(f"init_text ids should lie in [0, {vocab_size}), got min "
                         f"{int(ids.min())}, max {int(ids.max())}")
    repeats = -(-num_virtual_tokens // ids.numel())
    return ids.repeat(repeats)[:num_virtual_tokens]  # (P,)


def apply_prompt(
    model: nn.Module,
    num_virtual_tokens: int = 10,
    init: str = "random",
    init_text: Sequence[int] | None = None,
) -> tuple[str, ...]:
    """Prepend a soft prompt to the model's input (see the module docstring); returns where."""
    if isinstance(num_virtual_tokens, bool) or not isinstance(num_virtual_tokens, int) or (
            num_virtual_tokens < 1):
        raise ValueError(
            f"num_virtual_tokens should be a positive integer, got {num_virtual_tokens!r}"
        )
    if init not in INITS:
        raise ValueError(f"prompt init should be one of {', '.join(map(repr, INITS))}, got "
                         f"{init!r}")
    if init_text is not None and init != "text":
        raise ValueError(f"init_text is used with init='text', got init={init!r}")
    names = {id(m): n for n, m in model.named_modules()}
    transformer = _transformer_body(model)
    if transformer is not None:
        embedding, stack = transformer
        token = embedding.token
        if not all(layer.self_attn.batch_first for layer in stack.layers):
            raise ValueError("prompt tuning needs batch-first Transformer layers")
    else:
        recurrent = _recurrent_body(model)
        if recurrent is None:
            raise ValueError(
                f"prompt tuning needs a Transformer or recurrent model with token inputs; "
                f"{type(model).__name__} is neither"
            )
        rnn, token = recurrent
        if token is None and init != "random":
            raise ValueError(f"prompt init={init!r} needs token inputs; this model reads "
                             f"features: use init='random'")
    weight = next(model.parameters())
    size = token.embedding_dim if token is not None else rnn.input_size
    with torch.no_grad():
        if init == "random":
            spread = float(token.weight.std()) if token is not None else 1.0
            vectors = torch.randn(num_virtual_tokens, size, device=weight.device) * spread
        else:
            ids = _init_ids(init, token.num_embeddings, num_virtual_tokens, init_text,
                            token.weight.device)
            if transformer is not None:
                was_training = embedding.training
                embedding.eval()
                vectors = embedding(ids[None])[0]  # (P, E), positions 0..P-1
                embedding.train(was_training)
            else:
                vectors = token(ids)  # (P, E)
    prompt = PromptEmbedding(vectors.to(weight.dtype))
    model.add_module("prompt_tuning", prompt)
    if transformer is not None:
        embedding.register_forward_pre_hook(prompt.embedding_hook, with_kwargs=True)
        stack.register_forward_pre_hook(prompt.stack_pre_hook, with_kwargs=True)
        stack.register_forward_hook(prompt.stack_hook, with_kwargs=True)
        return (names[id(stack)],)
    rnn.register_forward_pre_hook(prompt.recurrent_pre_hook, with_kwargs=True)
    rnn.register_forward_hook(prompt.recurrent_hook, with_kwargs=True)
    return (names[id(rnn)],)
