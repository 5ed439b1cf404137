"""Attention over patches: rollout against its formula worked by hand, the grid layout, the PNG."""

import pytest
import torch

from seqlab.models.vision import VisionTransformer
from seqlab.viz.patches import attention_rollout, class_token_attention, plot_patch_attention


def test_rollout_of_two_layers_by_hand():
    # One example, one head, T = 2 tokens.
    first = torch.tensor([[[[0.2, 0.8], [0.6, 0.4]]]])
    second = torch.tensor([[[[1.0, 0.0], [0.5, 0.5]]]])
    # Â = (A + I) / 2 (rows still sum to 1): Â1 = [[.6, .4], [.3, .7]], Â2 = [[1, 0], [.25, .75]].
    # R = Â2 Â1 = [[.6, .4], [.25·.6 + .75·.3, .25·.4 + .75·.7]] = [[.6, .4], [.375, .625]].
    expected = torch.tensor([[[0.6, 0.4], [0.375, 0.625]]])
    torch.testing.assert_close(attention_rollout([first, second]), expected)
    # Without the residual identity it is the plain product A2 A1.
    torch.testing.assert_close(attention_rollout([first, second], residual=False),
                               second[:, 0] @ first[:, 0])


def test_rollout_averages_heads_and_keeps_rows_summing_to_one():
    weights = torch.rand(3, 2, 5, 5).softmax(-1)
    heads_apart = attention_rollout([weights])
    torch.testing.assert_close(heads_apart, 0.5 * weights.mean(1) + 0.5 * torch.eye(5))
    torch.testing.assert_close(attention_rollout([weights] * 4).sum(-1), torch.ones(3, 5))


def test_class_token_rows_land_on_the_patch_grid_row_by_row():
    weights = torch.zeros(1, 1, 5, 5)
    weights[0, 0, 0] = torch.tensor([0.1, 0.0, 0.2, 0.3, 0.4])  # class token -> cls, p0..p3
    weights[0, 0, 1:, 1:] = torch.eye(4)
    layers = class_token_attention([weights], grid_size=2, method="layers")
    torch.testing.assert_close(layers, torch.tensor([[[[0.0, 0.2], [0.3, 0.4]]]]))
    rollout = class_token_attention([weights], grid_size=2)
    # Row 0 of (A + I) / 2: the class token keeps 0.55 of itself, patches get half their weight.
    torch.testing.assert_close(rollout, torch.tensor([[[[0.0, 0.1], [0.15, 0.2]]]]))
    with pytest.raises(ValueError, match="5 tokens do not fit a class token \\+ 3x3 patches"):
        class_token_attention([weights], grid_size=3)
    with pytest.raises(ValueError, match="method should be 'rollout' or 'layers'"):
        class_token_attention([weights], grid_size=2, method="max")


def test_plot_writes_a_png_for_a_vit(tmp_path):
    torch.manual_seed(0)
    model = VisionTransformer(8, 2, 10, in_channels=1, d_model=8, nhead=2, num_layers=2).eval()
    images = torch.rand(2, 1, 8, 8)
    out = model(images, output_attentions=True)
    path = plot_patch_attention(images, out.attentions, tmp_path / "a" / "vit.png",
                                model.grid_size, titles=["one", "two"])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="titles should have one line per image \\(2\\), got 1"):
        plot_patch_attention(images, out.attentions, tmp_path / "b.png", 4, titles=["x"])
