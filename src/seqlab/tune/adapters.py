"""Bottleneck adapters: small residual networks inserted into a frozen model.

Houlsby et al. (2019), "Parameter-Efficient Transfer Learning for NLP"; Pfeiffer et al. (2020),
"AdapterFusion" (one adapter per layer). An adapter reads a sub-layer's output h (size E) and
adds a bottleneck of size m = E / reduction_factor:

    Adapter(h) = h + W_up act(W_down h + b_down) + b_up,     W_down (m, E), W_up (E, m)

W_up and b_up start at zero, so every adapter is the identity at step 0 and the tuned model is
the base model. Placement:

=========== =================================================================================
houlsby     in each Transformer layer, after the self-attention sub-layer (and the
            cross-attention of decoder layers) and after the feed-forward sub-layer, on the
            sub-layer's output before dropout and the residual sum
pfeiffer    after the feed-forward sub-layer only
recurrent   (either placement) on the features the output layer reads: after the recurrent
            stack (and the pooling of a classifier), before ``head`` (a decoder's ``out``)
=========== =================================================================================

The seqlab layers are not edited: each adapter is registered on its layer as ``adapter_*`` and
called by a forward hook on the sub-layer (``self_attn``, ``multihead_attn``, ``linear2``, or
before the head), so the base weights keep their names.
"""

from __future__ import annotations

from torch import Tensor, nn

from seqlab.nn.transformer import (
    TransformerDecoderLayer,
    TransformerEncoderLayer,
    activation_function,
)
from seqlab.tune.base import TuningModule

__all__ = ["PLACEMENTS", "BottleneckAdapter", "apply_adapters"]

PLACEMENTS = ("houlsby", "pfeiffer")


class BottleneckAdapter(TuningModule):
    r"""h + W_up act(W_down h + b_down) + b_up, zero at the start (W_up = 0, b_up = 0).

    ====== ==============
    input  (*, E)
    output (*, E)
    ====== ==============
    """

    def __init__(self, size: int, reduction_factor: float = 16, activation: str = "relu") -> None:
        super().__init__()
        bottleneck = max(1, int(size // reduction_factor))
        self.activation_name = activation
        self.activation = activation_function(activation)
        self.down = nn.Linear(size, bottleneck)
        self.up = nn.Linear(bottleneck, size)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: Tensor) -> Tensor:
        if self.disabled:
            return h
        return h + self.up(self.activation(self.down(h)))

    def attention_hook(self, module: nn.Module, args, output: tuple) -> tuple:
        """Forward hook on an attention module, whose output is (output, weights)."""
        return (self(output[0]), *output[1:])

    def output_hook(self, module: nn.Module, args, output: Tensor) -> Tensor:
        """Forward hook on a layer whose output the adapter reads (linear2)."""
        return self(output)

    def input_hook(self, module: nn.Module, args: tuple) -> tuple:
        """Forward pre-hook on the output layer: the adapter reads the features it gets."""
        return (self(args[0]), *args[1:])

    def extra_repr(self) -> str:
        return f"activation={self.activation_name!r}"


def _recurrent_output_layer(model: nn.Module) -> tuple[str, nn.Module, nn.Module]:
    """(name, owner, output layer) of a recurrent model: its ``head``, or its decoder's ``out``."""
    for name in ("head", "decoder.out"):
        owner = model
        parts = name.split(".")
        for part in parts[:-1]:
            owner = getattr(owner, part, None)
        layer = getattr(owner, parts[-1], None) if owner is not None else None
        if isinstance(layer, nn.Linear):
            return name, owner, layer
    raise ValueError(
        f"adapters need Transformer layers or a recurrent model with a linear `head` (or a "
        f"decoder with `out`); {type(model).__name__} has neither"
    )


def apply_adapters(
    model: nn.Module,
    reduction_factor: float = 16,
    placement: str = "pfeiffer",
    activation: str = "relu",
) -> tuple[str, ...]:
    """Insert bottleneck adapters (see the module docstring); returns where they went."""
    if placement not in PLACEMENTS:
        raise ValueError(
            f"adapter placement should be one of {', '.join(map(repr, PLACEMENTS))}, got "
            f"{placement!r}"
        )
    if isinstance(reduction_factor, bool) or not reduction_factor > 0:
        raise ValueError(
            f"reduction_factor should be a positive number (E / bottleneck size), got "
            f"{reduction_factor!r}"
        )
    activation_function(activation)
    placed = []
    for name, layer in model.named_modules():
        if not isinstance(layer, TransformerEncoderLayer | TransformerDecoderLayer):
            continue
        size = layer.linear2.out_features
        sublayers = [("adapter_output", layer.linear2, "output_hook")]
        if placement == "houlsby":
            sublayers.insert(0, ("adapter_attention", layer.self_attn, "attention_hook"))
            if isinstance(layer, TransformerDecoderLayer):
                sublayers.insert(
                    1, ("adapter_cross_attention", layer.multihead_attn, "attention_hook")
                )
        for adapter_name, sublayer, hook in sublayers:
            adapter = BottleneckAdapter(size, reduction_factor, activation).to(
                layer.linear2.weight.device
            )
            layer.add_module(adapter_name, adapter)
            sublayer.register_forward_hook(getattr(adapter, hook))
            placed.append(f"{name}.{adapter_name}")
    if placed:
        return tuple(placed)
    name, owner, output_layer = _recurrent_output_layer(model)
    adapter = BottleneckAdapter(output_layer.in_features, reduction_factor, activation).to(
        output_layer.weight.device
    )
    owner_name = name.rpartition(".")[0]
    owner.add_module("adapter_output", adapter)
    output_layer.register_forward_pre_hook(adapter.input_hook)
    return (f"{owner_name}.adapter_output" if owner_name else "adapter_output",)
