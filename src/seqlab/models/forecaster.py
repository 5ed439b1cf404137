"""A Transformer encoder that reads a window of a time series and forecasts the next H steps."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seqlab.models.outputs import TaggerOutput
from seqlab.models.registry import register_model
from seqlab.nn.positional import LearnedPositionalEmbedding, SinusoidalPositionalEncoding
from seqlab.nn.transformer import TransformerEncoder, TransformerEncoderLayer

__all__ = ["TransformerForecaster"]


@register_model
class TransformerForecaster(nn.Module):
    r"""Window in, multi-step forecast out: value projection + positions, a bidirectional
    Transformer encoder (every step of the window sees every other), a linear head on the last
    step's vector.

    .. math::
        e_s = W_{in} x_s + b_{in} + P_s, \qquad
        h_{1..W} = \mathrm{Encoder}(e_{1..W}), \qquad
        \hat y_{t+1..t+H} = \mathrm{reshape}_{H \times F}(W_{out}\, h_W + b_{out})

    The last step's vector sits next to the values being forecast, and with attention it can
    read the whole window (a season back, a cycle back). Positions are learned or sinusoidal
    (Vaswani et al., 2017); with ``norm_first`` a final LayerNorm closes the stack. The loss is
    the mean squared error over the H × F forecast values.

    Shapes (N batch, W window length ≤ max_length, F series, H horizon, E = d_model):

    ========== ===========================================
    inputs     (N, W, F) float, oldest step first
    targets    (N, H, F) float, or (N, H) when F = 1
    logits     (N, H, F) the forecast
    hidden     (N, W, E) the encoder's outputs
    ========== ===========================================
    """

    def __init__(
        self,
        input_size: int,
        horizon: int,
        d_model: int = 64,
        nhead: int = 4,
        num_layers: int = 2,
        dim_feedforward: int | None = None,
        dropout: float = 0.1,
        activation: str = "gelu",
        norm_first: bool = True,
        positional: str = "learned",
        max_length: int = 512,
    ) -> None:
        super().__init__()
        if input_size < 1 or horizon < 1:
            raise ValueError(f"input_size and horizon should be >= 1, got {input_size} and {horizon}")
        if positional not in ("learned", "sinusoidal"):
            raise ValueError(f"positional should be 'learned' or 'sinusoidal', got {positional!r}")
        self.input_size = input_size
        self.horizon = horizon
        self.max_length = max_length
        self.input_projection = nn.Linear(input_size, d_model)
        if positional == "learned":
            self.position = LearnedPositionalEmbedding(d_model, max_length)
        else:
            self.position = SinusoidalPositionalEncoding(d_model, max_length)
        self.dropout = nn.Dropout(dropout)
        layer = TransformerEncoderLayer(
            d_model, nhead, dim_feedforward or 4 * d_model, dropout=dropout, activation=activation,
            batch_first=True, norm_first=norm_first,
        )
        self.encoder = TransformerEncoder(layer, num_layers, norm=nn.LayerNorm(d_model) if norm_first else None)
        self.head = nn.Linear(d_model, horizon * input_size)

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def forward(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> TaggerOutput:
        if inputs.size(1) > self.max_length:
            raise ValueError(
                f"a window of {inputs.size(1)} steps exceeds max_length={self.max_length}; "
                "give at most that many values or build the model with a larger max_length"
            )
        x = self.dropout(self.position(self.input_projection(inputs)))  # (N, W, E)
        hidden, weights = self.encoder(x, need_weights=need_weights)  # (N, W, E)
        forecast = self.head(hidden[:, -1]).view(-1, self.horizon, self.input_size)  # (N, H, F)
        loss = None
        if targets is not None:
            loss = F.mse_loss(forecast, targets.to(forecast.dtype).reshape(forecast.shape))
        attentions = tuple(weights) if weights is not None else None
        return TaggerOutput(logits=forecast, loss=loss, attentions=attentions, hidden=hidden)
