"""Generated tasks: exact reproducibility by seed and the published statistics and layouts."""

import datetime
import math
import re

import pytest
import torch

from seqlab.data import (
    adding_problem,
    adding_problem_hs97,
    copy_memory,
    copy_memory_baseline,
    dates,
    digits,
    fill_in_the_blank,
    reversal,
)


def test_adding_problem_layout_target_and_seed():
    x, y = adding_problem(64, 20, seed=3)
    assert x.shape == (64, 20, 2) and y.shape == (64,)
    markers = x[..., 1]
    assert markers.sum(dim=1).eq(2).all()
    assert markers[:, :10].sum(dim=1).eq(1).all() and markers[:, 10:].sum(dim=1).eq(1).all()
    torch.testing.assert_close(y, (x[..., 0] * markers).sum(dim=1))
    assert x[..., 0].min() >= 0 and x[..., 0].max() <= 1
    again_x, again_y = adding_problem(64, 20, seed=3)
    assert torch.equal(x, again_x) and torch.equal(y, again_y)
    assert not torch.equal(x, adding_problem(64, 20, seed=4)[0])


def test_adding_problem_baseline_mse_is_one_sixth():
    _, y = adding_problem(20000, 10, seed=0)
    # Predicting the mean 1 scores Var(u1 + u2) = 2/12; the estimate's standard error is ~0.0014.
    assert abs(y.mean().item() - 1.0) < 0.01
    assert abs(((y - 1.0) ** 2).mean().item() - 1 / 6) < 0.006


def test_adding_problem_hs97_follows_the_paper():
    T = 40
    x, y, lengths = adding_problem_hs97(500, T, seed=1)
    assert x.shape == (500, T + T // 10, 2)
    assert lengths.min() >= T and lengths.max() <= T + T // 10
    values, markers = x[..., 0], x[..., 1]
    assert values.min() >= -1 and values.max() <= 1
    marked = markers == 1
    assert marked.sum(dim=1).eq(2).all()
    positions = [row.nonzero().flatten().tolist() for row in marked]
    assert all(first < 10 and second < T // 2 for first, second in positions)
    assert any(second >= 10 for _, second in positions)
    for row, length in enumerate(lengths.tolist()):
        assert markers[row, length - 1] == -1
        assert markers[row, 0] == (1 if marked[row, 0] else -1)
        assert x[row, length:].eq(0).all()
        assert markers[row, 1 : length - 1].ne(-1).all()
    expected = 0.5 + (values * marked).sum(dim=1) / 4.0
    torch.testing.assert_close(y, expected)
    assert y.min() >= 0 and y.max() <= 1
    assert torch.equal(x, adding_problem_hs97(500, T, seed=1)[0])
    with pytest.raises(ValueError, match="length must be >= 22, got 10"):
        adding_problem_hs97(4, 10)


def test_copy_memory_layout():
    T, C, K = 7, 10, 8
    x, y = copy_memory(32, T, seed=2)
    assert x.shape == y.shape == (32, T + 2 * C) and x.dtype == torch.int64
    symbols = x[:, :C]
    assert symbols.min() >= 1 and symbols.max() <= K
    assert x[:, C : C + T - 1].eq(0).all()
    assert x[:, C + T - 1].eq(K + 1).all()
    assert x[:, C + T :].eq(0).all()
    assert y[:, : T + C].eq(0).all() and torch.equal(y[:, T + C :], symbols)
    assert torch.equal(x, copy_memory(32, T, seed=2)[0])
    x, y = copy_memory(4, 5, num_symbols=3, copy_length=2)
    assert x.shape == (4, 9) and x[:, 6].eq(4).all() and torch.equal(y[:, -2:], x[:, :2])


@pytest.mark.parametrize("T", [10, 100])
def test_copy_memory_baseline_matches_the_best_memoryless_predictor(T):
    _, y = copy_memory(4000, T, seed=0)
    # The best memoryless predictor outputs each step's marginal distribution; its cross-entropy
    # per step is the average entropy of those marginals.
    entropy = 0.0
    for step in range(y.shape[1]):
        p = torch.bincount(y[:, step], minlength=10).double() / y.shape[0]
        p = p[p > 0]
        entropy -= (p * p.log()).sum().item()
    entropy /= y.shape[1]
    assert copy_memory_baseline(T) == pytest.approx(10 * math.log(8) / (T + 20))
    assert entropy == pytest.approx(copy_memory_baseline(T), rel=0.01)


def test_digits_rows_pixels_split_and_permutation():
    rows = digits("rows", seed=0)
    x, y = rows["train"]
    assert x.shape[1:] == (8, 8) and y.dtype == torch.int64
    n_train, n_test = len(y), len(rows["test"][1])
    assert n_train + n_test == 1797 and n_test == round(1797 * 0.2)
    assert x.min() == 0 and x.max() == 1 and sorted(y.unique().tolist()) == list(range(10))
    pixels = digits("pixels", seed=0)
    assert torch.equal(pixels["train"][0].view(-1, 64), x.reshape(-1, 64))
    permuted = digits("pixels", permuted=True, seed=0)["train"][0].view(-1, 64)
    plain = x.reshape(-1, 64)
    # One fixed permutation for all images: match each permuted column to an unused original
    # column with the same values (blank border pixels are interchangeable).
    order, used = [], set()
    for j in range(64):
        k = next(k for k in range(64) if k not in used and torch.equal(permuted[:, j], plain[:, k]))
        order.append(k)
        used.add(k)
    assert torch.equal(plain[:, order], permuted)
    assert not torch.equal(permuted, plain)
    assert torch.equal(digits(seed=0)["test"][0], rows["test"][0])
    assert not torch.equal(digits(seed=1)["test"][1], rows["test"][1])
    with pytest.raises(ValueError, match=r"sequence must be one of \('rows', 'pixels'\)"):
        digits("columns")


def test_reversal_pairs():
    pairs = reversal(200, min_length=2, max_length=6, num_symbols=5, seed=4)
    assert pairs == reversal(200, min_length=2, max_length=6, num_symbols=5, seed=4)
    lengths = set()
    for source, target in pairs:
        tokens = source.split(" ")
        assert target.split(" ") == tokens[::-1]
        assert set(tokens) <= set("abcde")
        lengths.add(len(tokens))
    assert lengths == {2, 3, 4, 5, 6}


_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def _parse(source):
    """An independent reading of the documented spellings (slashes US, dots day.month)."""
    words = [w for w in re.findall(r"[A-Za-z]+", source.lower()) if w[:3] in _MONTHS + _DAYS]
    numbers = re.findall(r"\d+", source)
    weekday = next((_DAYS.index(w[:3]) for w in words if w[:3] in _DAYS), None)
    month_words = [w for w in words if w[:3] in _MONTHS]
    if month_words:
        month = _MONTHS.index(month_words[0][:3]) + 1
        day, year = int(numbers[0]), numbers[1]
    elif len(numbers[0]) == 4:
        year, month, day = numbers[0], int(numbers[1]), int(numbers[2])
    elif "." in source:
        day, month, year = int(numbers[0]), int(numbers[1]), numbers[2]
    else:
        month, day, year = int(numbers[0]), int(numbers[1]), numbers[2]
    if len(year) == 2:
        year = ("19" if int(year) >= 50 else "20") + year
    return datetime.date(int(year), month, day), weekday


def test_dates_targets_are_iso_and_parse_back_to_the_source_date():
    pairs = dates(2000, seed=5)
    assert pairs == dates(2000, seed=5) and pairs != dates(2000, seed=6)
    shapes = set()
    for source, target in pairs:
        date = datetime.date.fromisoformat(target)
        assert target == date.isoformat()
        parsed, weekday = _parse(source)
        assert parsed == date, source
        if weekday is not None:
            assert weekday == date.weekday(), source
        assert datetime.date(1950, 1, 1) <= date <= datetime.date(2049, 12, 31)
        shapes.add(re.sub(r"\d", "9", re.sub(r"[a-z]+", "a", source.lower())))
    assert len(shapes) >= 12
    assert any(re.fullmatch(r"\d{2}/\d{2}/\d{2}", s) for s, _ in pairs)
    assert any(re.fullmatch(r"[A-Z][a-z]{2} \d{1,2} [A-Z][a-z]{2} \d{4}", s) for s, _ in pairs)


def test_fill_in_the_blank_label_only_after_the_blank():
    pairs = fill_in_the_blank(2000, seed=0)
    assert pairs == fill_in_the_blank(2000, seed=0)
    labels = {label for _, label in pairs}
    assert labels == {"bird", "cat", "dog", "fish"}
    prefixes = {label: set() for label in labels}
    cues = {label: set() for label in labels}
    for text, label in pairs:
        assert text.count("___") == 1
        before, after = text.split("___")
        prefixes[label].add(before)
        cues[label].add(after)
    # The same left contexts occur with every label, while right contexts never overlap.
    assert prefixes["dog"] == prefixes["cat"] == prefixes["bird"] == prefixes["fish"]
    assert all(cues[a].isdisjoint(cues[b]) for a in labels for b in labels if a != b)
