"""Patch embedding: a hand-computed case, the Conv2d form against unfold + linear, gradcheck."""

import pytest
import torch
import torch.nn.functional as F

from seqlab.models.vision import PatchEmbedding, patchify


def test_four_by_four_image_with_two_by_two_patches_by_hand():
    embed = PatchEmbedding(image_size=4, patch_size=2, in_channels=1, embed_dim=2)
    with torch.no_grad():
        embed.proj.weight.copy_(torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]], [[[1.0, 1.0], [1.0, 1.0]]]]))
        embed.proj.bias.copy_(torch.tensor([0.5, 0.0]))
    image = torch.arange(16.0).view(1, 1, 4, 4)
    # Patches row by row: [[0, 1], [4, 5]], [[2, 3], [6, 7]], [[8, 9], [12, 13]], [[10, 11], [14, 15]].
    # Feature 0 = 1·a + 2·b + 3·c + 4·d + 0.5, feature 1 = a + b + c + d.
    expected = torch.tensor([[
        [0 + 2 + 12 + 20 + 0.5, 0 + 1 + 4 + 5],
        [2 + 6 + 18 + 28 + 0.5, 2 + 3 + 6 + 7],
        [8 + 18 + 36 + 52 + 0.5, 8 + 9 + 12 + 13],
        [10 + 22 + 42 + 60 + 0.5, 10 + 11 + 14 + 15],
    ]])
    assert embed.num_patches == 4 and embed.grid_size == 2
    torch.testing.assert_close(embed(image), expected)


def test_patchify_orders_patches_row_by_row_and_values_channel_major():
    image = torch.arange(2 * 4 * 4.0).view(1, 2, 4, 4)
    patches = patchify(image, 2)  # (1, 4, 8)
    # The third patch (bottom left): channel 0 rows 2-3, columns 0-1, then channel 1's.
    torch.testing.assert_close(patches[0, 2], torch.tensor([8.0, 9, 12, 13, 24, 25, 28, 29]))
    # torch's own unfold lays patches out the same way.
    torch.testing.assert_close(patches, F.unfold(image, kernel_size=2, stride=2).transpose(1, 2))


@pytest.mark.parametrize("channels, size, patch", [(1, 8, 2), (3, 8, 4), (3, 12, 3)])
def test_conv_form_equals_unfold_then_linear(channels, size, patch):
    torch.manual_seed(0)
    embed = PatchEmbedding(size, patch, in_channels=channels, embed_dim=5)
    images = torch.randn(3, channels, size, size)
    weight = embed.proj.weight.flatten(1)  # (E, C * P * P)
    linear = patchify(images, patch) @ weight.T + embed.proj.bias  # (N, L, E)
    torch.testing.assert_close(embed(images), linear, rtol=1e-5, atol=1e-5)


def test_gradcheck_in_float64():
    torch.manual_seed(0)
    embed = PatchEmbedding(4, 2, in_channels=2, embed_dim=3).double()
    images = torch.randn(2, 2, 4, 4, dtype=torch.float64, requires_grad=True)

    def function(x, weight, bias):
        return torch.func.functional_call(embed, {"proj.weight": weight, "proj.bias": bias}, (x,))

    weight = embed.proj.weight.detach().clone().requires_grad_(True)
    bias = embed.proj.bias.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(function, (images, weight, bias))


def test_bad_sizes_are_value_errors_naming_them():
    with pytest.raises(ValueError, match="patch_size should divide image_size=8, got 3"):
        PatchEmbedding(8, 3)
    embed = PatchEmbedding(8, 2, in_channels=1)
    with pytest.raises(ValueError, match=r"images should be \(N, 1, 8, 8\).*got shape \(2, 3, 8, 8\)"):
        embed(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="multiple of patch_size=4"):
        patchify(torch.zeros(1, 1, 6, 6), 4)
