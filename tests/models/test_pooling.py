"""Pooling helpers: masks from lengths, masked mean / max, merging the final states."""

import pytest
import torch

from seqlab.models.pooling import lengths_to_mask, merge_final_states, pool_outputs


def test_lengths_to_mask():
    mask = lengths_to_mask(torch.tensor([3, 1, 2]), 3, 3)
    assert mask.tolist() == [[True, True, True], [True, False, False], [True, True, False]]
    assert lengths_to_mask(None, 2, 2).all()
    with pytest.raises(ValueError, match=r"lengths should lie in \[1, 3\]"):
        lengths_to_mask(torch.tensor([4, 1]), 3, 2)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        lengths_to_mask(torch.tensor([1, 1, 1]), 3, 2)


def test_masked_mean_and_max_by_hand():
    outputs = torch.tensor([[[1.0, -5.0], [3.0, 2.0], [100.0, 100.0]]])  # (1, 3, 2)
    mask = torch.tensor([[True, True, False]])
    assert pool_outputs(outputs, mask, "mean").tolist() == [[2.0, -1.5]]
    assert pool_outputs(outputs, mask, "max").tolist() == [[3.0, 2.0]]


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_pooling_gradcheck(pooling):
    outputs = torch.randn(3, 4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    outputs.requires_grad_(True)
    mask = lengths_to_mask(torch.tensor([4, 1, 2]), 4, 3)
    assert torch.autograd.gradcheck(lambda o: pool_outputs(o, mask, pooling), (outputs,))


def test_merge_final_states_takes_the_top_layer():
    h_n = torch.arange(2 * 2 * 3 * 2, dtype=torch.float64).reshape(4, 3, 2)  # 2 layers x 2 dirs
    forward, backward = h_n[2], h_n[3]
    torch.testing.assert_close(merge_final_states(h_n, 2, "concat"),
                               torch.cat([forward, backward], dim=-1))
    torch.testing.assert_close(merge_final_states(h_n, 2, "sum"), forward + backward)
    torch.testing.assert_close(merge_final_states(h_n, 2, "mean"), (forward + backward) / 2)
    torch.testing.assert_close(merge_final_states(h_n, 2, "max"),
                               torch.maximum(forward, backward))
    torch.testing.assert_close(merge_final_states(h_n, 1, "concat"), h_n[3])
    with pytest.raises(ValueError, match="merge_mode"):
        merge_final_states(h_n, 2, "product")
