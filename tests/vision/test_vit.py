"""VisionTransformer against torch.nn's encoder, its invariances, and the small CNN by formula."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from seqlab import models
from seqlab.models.vision import SmallCNN, VisionTransformer, patchify
from seqlab.train.checkpoint import save_weights


def _vit(**options):
    torch.manual_seed(0)
    settings = {"image_size": 8, "patch_size": 2, "num_classes": 10, "in_channels": 1,
                "d_model": 16, "nhead": 2, "num_layers": 2, "dropout": 0.0}
    settings.update(options)
    return VisionTransformer(**settings).eval()


def _unpatchify(patches, channels, size, patch):
    """(N, L, C*P*P) -> (N, C, H, W), the inverse of patchify."""
    grid = size // patch
    x = patches.reshape(-1, grid, grid, channels, patch, patch)  # (N, G, G, C, P, P)
    return x.permute(0, 3, 1, 4, 2, 5).reshape(-1, channels, size, size)


@pytest.mark.parametrize("norm_first", [True, False])
def test_logits_match_torch_transformer_encoder_with_the_same_weights(norm_first):
    model = _vit(norm_first=norm_first)
    layer = nn.TransformerEncoderLayer(16, 2, 64, dropout=0.0, activation="gelu",
                                       layer_norm_eps=1e-6, batch_first=True, norm_first=norm_first)
    final = nn.LayerNorm(16, eps=1e-6) if norm_first else None
    reference = nn.TransformerEncoder(layer, 2, norm=final, enable_nested_tensor=False).eval()
    reference.load_state_dict(model.encoder.state_dict())
    images = torch.rand(3, 1, 8, 8)
    # z0 = [cls; W patches + b] + positions; logits = head(encoder(z0)[:, 0]).
    tokens = patchify(images, 2) @ model.patch_embed.proj.weight.flatten(1).T + model.patch_embed.proj.bias
    z0 = torch.cat([model.cls_token.expand(3, -1, -1), tokens], 1) + model.position
    expected = model.head(reference(z0)[:, 0])
    torch.testing.assert_close(model(images).logits, expected, rtol=1e-5, atol=1e-5)


def test_an_image_gets_the_same_output_alone_or_among_others():
    model = _vit()
    images = torch.rand(5, 1, 8, 8)
    together = model(images, output_attentions=True)
    alone = model(images[3:4], output_attentions=True)
    torch.testing.assert_close(alone.logits[0], together.logits[3], rtol=1e-5, atol=1e-6)
    for mine, batch in zip(alone.attentions, together.attentions):
        torch.testing.assert_close(mine[0], batch[3], rtol=1e-5, atol=1e-6)


def test_patches_are_a_set_but_for_their_positions():
    model = _vit()
    images = torch.rand(2, 1, 8, 8)
    permutation = torch.randperm(16, generator=torch.Generator().manual_seed(1))
    shuffled = _unpatchify(patchify(images, 2)[:, permutation], 1, 8, 2)
    original = model(images).logits.detach()
    # With the same positions, moving the patches changes what the class token sees ...
    assert not torch.allclose(model(shuffled).logits, original, atol=1e-4)
    # ... and moving the position rows with them restores it exactly: attention itself is
    # permutation-equivariant, the learned positions are all that say where a patch was.
    with torch.no_grad():
        model.position[:, 1:] = model.position[:, 1:][:, permutation]
    torch.testing.assert_close(model(shuffled).logits, original, rtol=1e-5, atol=1e-5)


def test_attentions_when_asked_rows_sum_to_one_and_loss_is_cross_entropy():
    model = _vit(num_layers=3)
    images, targets = torch.rand(4, 1, 8, 8), torch.tensor([0, 3, 9, 3])
    out = model(images, targets=targets, output_attentions=True)
    assert len(out.attentions) == 3 and out.attentions[0].shape == (4, 2, 17, 17)
    torch.testing.assert_close(out.attentions[1].sum(-1), torch.ones(4, 2, 17))
    torch.testing.assert_close(out.pooled, out.hidden[:, 0])
    expected = -out.logits.log_softmax(-1)[torch.arange(4), targets].mean()
    torch.testing.assert_close(out.loss, expected)
    assert model(images).attentions is None


def test_small_cnn_is_its_formula():
    torch.manual_seed(0)
    model = SmallCNN(8, 3, in_channels=1, channels=(2, 3), dropout=0.0).eval()
    images = torch.rand(2, 1, 8, 8)
    first, second = model.convs[0], model.convs[3]
    x = F.max_pool2d(F.relu(F.conv2d(images, first.weight, first.bias, padding=1)), 2)  # (2, 2, 4, 4)
    x = F.max_pool2d(F.relu(F.conv2d(x, second.weight, second.bias, padding=1)), 2)  # (2, 3, 2, 2)
    expected = x.flatten(1) @ model.head.weight.T + model.head.bias
    torch.testing.assert_close(model(images).logits, expected)
    with pytest.raises(ValueError, match="multiple of 2\\^3 = 8.*got 12"):
        SmallCNN(12, 3, channels=(4, 4, 4))


@pytest.mark.parametrize("build", [lambda: _vit(), lambda: SmallCNN(8, 4, in_channels=1, channels=(3,))])
def test_models_rebuild_from_their_weights_file(tmp_path, build):
    model = build().eval()
    save_weights(tmp_path / "model.safetensors", model)
    loaded = models.load(tmp_path / "model.safetensors")
    images = torch.rand(2, 1, 8, 8)
    assert type(loaded) is type(model)
    torch.testing.assert_close(loaded(images).logits, model(images).logits)


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="activation should be one of .*got 'tanh'"):
        _vit(activation="tanh")
    with pytest.raises(ValueError, match="patch_size should divide image_size=8, got 3"):
        _vit(patch_size=3)
