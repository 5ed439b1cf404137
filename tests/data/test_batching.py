"""Padding numbers, truncation, masks, and batch index sets (coverage, determinism, buckets)."""

import pytest
import torch

from seqlab.data import batches, bucket_batches, pad_sequences, padding_mask


def test_pad_to_longest():
    padded, lengths = pad_sequences([[5, 8, 2], [7, 7, 3, 9], [4]])
    assert torch.equal(padded, torch.tensor([[5, 8, 2, 0], [7, 7, 3, 9], [4, 0, 0, 0]]))
    assert torch.equal(lengths, torch.tensor([3, 4, 1]))
    assert padded.dtype == torch.int64 and lengths.dtype == torch.int64


def test_pad_and_truncate_to_fixed_length_both_ends():
    sequences = [[1, 2, 3, 4, 5], [6, 7]]
    padded, lengths = pad_sequences(sequences, pad_value=-1, max_length=3)
    assert torch.equal(padded, torch.tensor([[1, 2, 3], [6, 7, -1]]))
    assert torch.equal(lengths, torch.tensor([3, 2]))
    padded, lengths = pad_sequences(sequences, max_length=3, truncation="left")
    assert torch.equal(padded, torch.tensor([[3, 4, 5], [6, 7, 0]]))
    padded, _ = pad_sequences(sequences, max_length=7)
    assert padded.shape == (2, 7) and padded[0, 5:].eq(0).all()


def test_pad_feature_sequences_and_tensors():
    a = torch.arange(6, dtype=torch.float32).view(3, 2)
    b = torch.ones(1, 2)
    padded, lengths = pad_sequences([a, b], pad_value=0.5)
    expected = torch.tensor(
        [[[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]], [[1.0, 1.0], [0.5, 0.5], [0.5, 0.5]]]
    )
    assert torch.equal(padded, expected) and torch.equal(lengths, torch.tensor([3, 1]))
    padded, _ = pad_sequences([torch.tensor([[1, 2]]), torch.tensor([[3, 4], [5, 6]])])
    assert padded.dtype == torch.get_default_dtype()
    padded, lengths = pad_sequences([torch.tensor([3, 1]), torch.tensor([], dtype=torch.int64)])
    assert torch.equal(padded, torch.tensor([[3, 1], [0, 0]])) and lengths.tolist() == [2, 0]


def test_pad_errors_name_the_allowed_values():
    with pytest.raises(ValueError, match=r"truncation must be one of \('right', 'left'\)"):
        pad_sequences([[1]], truncation="middle")
    with pytest.raises(ValueError, match="mix 1-D and 2-D"):
        pad_sequences([torch.zeros(2), torch.zeros(2, 3)])
    with pytest.raises(ValueError, match="at least one"):
        pad_sequences([])


def test_padding_mask_matches_lengths():
    mask = padding_mask(torch.tensor([2, 0, 3]))
    assert mask.tolist() == [[True, True, False], [False, False, False], [True, True, True]]
    assert padding_mask(torch.tensor([1]), max_length=3).tolist() == [[True, False, False]]


def _flat(groups):
    return sorted(index for group in groups for index in group)


def test_batches_cover_every_index_and_are_deterministic():
    groups = batches(23, 5, shuffle=True, seed=3, epoch=1)
    assert _flat(groups) == list(range(23))
    assert [len(group) for group in groups] == [5, 5, 5, 5, 3]
    assert groups == batches(23, 5, shuffle=True, seed=3, epoch=1)
    assert groups != batches(23, 5, shuffle=True, seed=3, epoch=2)
    assert batches(5, 2, shuffle=False) == [[0, 1], [2, 3], [4]]
    assert batches(5, 2, shuffle=False, drop_last=True) == [[0, 1], [2, 3]]


def test_bucket_batches_cover_every_index_once_and_are_deterministic():
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 100, (1000,), generator=generator)
    groups = bucket_batches(lengths, batch_size=16, seed=7, epoch=0, bucket_size_multiplier=10)
    assert _flat(groups) == list(range(1000))
    assert groups == bucket_batches(lengths, 16, seed=7, epoch=0, bucket_size_multiplier=10)
    assert groups != bucket_batches(lengths, 16, seed=7, epoch=1, bucket_size_multiplier=10)
    dropped = bucket_batches(lengths, 16, seed=7, drop_last=True, bucket_size_multiplier=10)
    assert all(len(group) == 16 for group in dropped) and len(_flat(dropped)) == 1000 - 1000 % 16


def test_bucket_batches_reduce_padding():
    generator = torch.Generator().manual_seed(1)
    lengths = torch.randint(1, 200, (2000,), generator=generator)

    def padding(groups):
        return sum(int(lengths[g].max()) * len(g) - int(lengths[g].sum()) for g in groups)

    bucketed = padding(bucket_batches(lengths, 32, seed=0))
    plain = padding(batches(2000, 32, shuffle=True, seed=0))
    # Random batches pad roughly to the 32-sample maximum; buckets of 1600 sorted
    # examples leave a spread of about 200/50 = 4 steps per batch.
    assert bucketed < 0.05 * plain


def test_bucket_batches_without_shuffle_sort_within_chunks():
    lengths = [5, 1, 4, 2, 3, 9, 7, 8]
    groups = bucket_batches(lengths, batch_size=2, shuffle=False, bucket_size_multiplier=2)
    # Chunks of 4 indices in order, each sorted by length.
    assert groups == [[1, 3], [2, 0], [4, 6], [7, 5]]


def test_batch_size_errors():
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        batches(4, 0)
    with pytest.raises(ValueError, match="bucket_size_multiplier must be >= 1"):
        bucket_batches([1, 2], 1, bucket_size_multiplier=0)


def test_pad_float_lists_keep_their_values():
    padded, lengths = pad_sequences([[0.5, 1.5], [2.25]])
    assert torch.equal(padded, torch.tensor([[0.5, 1.5], [2.25, 0.0]]))
    assert lengths.tolist() == [2, 1]


def test_token_batches_fill_up_to_the_token_budget():
    from seqlab.data.batching import token_batches

    lengths = [3, 9, 4, 4, 12, 1, 7, 7, 2, 30, 5, 6] * 5
    groups = token_batches(lengths, max_tokens=24, seed=1, epoch=2)
    assert sorted(i for group in groups for i in group) == list(range(len(lengths)))
    for group in groups:
        cost = len(group) * max(lengths[i] for i in group)  # padded tokens of the batch
        assert cost <= 24 or len(group) == 1  # the 30-token sequence rides alone
    assert groups == token_batches(lengths, max_tokens=24, seed=1, epoch=2)
    assert groups != token_batches(lengths, max_tokens=24, seed=1, epoch=3)
    ordered = token_batches([2, 2, 2, 5, 5], max_tokens=10, shuffle=False)
    assert ordered == [[0, 1, 2], [3, 4]]  # 3 x 2 = 6, then 4 x 5 > 10; 2 x 5 = 10
    with pytest.raises(ValueError, match="max_tokens"):
        token_batches([1, 2], max_tokens=0)
