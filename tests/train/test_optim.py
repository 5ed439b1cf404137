"""Learning-rate schedules against the formulas written out, and gradient clipping."""

import math

import pytest
import torch

from seqlab.schema import ConfigError
from seqlab.train.optim import LRSchedule, build_optimizer, clip_gradients, layer_lr_scales


def _optimizer(lr=1.0):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_warmup_then_cosine_matches_formula():
    lr, min_lr, warmup, total = 0.1, 0.01, 4, 20
    schedule = LRSchedule(_optimizer(), "cosine", lr, total, warmup_steps=warmup, min_lr=min_lr)
    for step in range(total + 1):
        if step < warmup:
            expected = lr * (step + 1) / warmup
        else:
            expected = min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))
        assert schedule.lr_for(step) == pytest.approx(expected, rel=1e-12)
    assert schedule.lr_for(warmup) == pytest.approx(lr)
    assert schedule.lr_for(total) == pytest.approx(min_lr)


def test_a_time_budget_moves_the_cosine_on_when_time_runs_out_first():
    lr, min_lr, warmup, total = 0.1, 0.01, 4, 1000
    schedule = LRSchedule(_optimizer(), "cosine", lr, total, warmup_steps=warmup, min_lr=min_lr)
    for step, used in [(10, 0.5), (10, 0.9), (600, 0.3), (2, 0.7), (10, 1.5), (10, 0.05)]:
        position = min(1.0, max((step - warmup) / (total - warmup), (used - 0.1) / 0.9))
        expected = (lr * (step + 1) / warmup if step < warmup else
                    min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * position)))
        assert schedule.lr_for(step, used) == pytest.approx(expected, rel=1e-12)
    assert schedule.lr_for(10, 1.0) == pytest.approx(min_lr)
    assert schedule.lr_for(10, None) == schedule.lr_for(10, 0.0)  # no budget: steps alone
    assert schedule.lr_for(10, 0.1) == schedule.lr_for(10, None)  # the first tenth: steps alone
    constant = LRSchedule(_optimizer(), "constant", lr, total)
    assert constant.lr_for(10, 0.9) == lr  # only the cosine follows the clock


def test_apply_sets_every_group():
    optimizer = _optimizer()
    schedule = LRSchedule(optimizer, "constant", 0.5, 10, warmup_steps=2)
    assert schedule.apply(0) == 0.25
    assert optimizer.param_groups[0]["lr"] == 0.25
    assert schedule.apply(5) == 0.5


def test_plateau_reduces_after_patience_and_round_trips():
    schedule = LRSchedule(_optimizer(), "plateau", 1.0, 100, plateau_factor=0.5, plateau_patience=1)
    for value in (1.0, 0.9, 0.95, 0.96):  # two evaluations without improvement > patience 1
        schedule.observe(value)
    assert schedule.lr_for(50) == 0.5
    twin = LRSchedule(_optimizer(), "plateau", 1.0, 100, plateau_factor=0.5, plateau_patience=1)
    twin.load_state_dict(schedule.state_dict())
    assert twin.lr_for(50) == 0.5 and twin.best == 0.9


def test_bad_scheduler_and_optimizer_names():
    with pytest.raises(ValueError, match="constant, cosine, plateau"):
        LRSchedule(_optimizer(), "linear", 1.0, 10)
    with pytest.raises(ValueError, match="sgd, adam, adamw, rmsprop"):
        build_optimizer([torch.nn.Parameter(torch.zeros(1))], "lamb", 1.0)


def _params_with_grads():
    a = torch.nn.Parameter(torch.zeros(2))
    b = torch.nn.Parameter(torch.zeros(1))
    a.grad = torch.tensor([3.0, -4.0])
    b.grad = torch.tensor([12.0])
    return a, b


def test_clip_by_norm():
    a, b = _params_with_grads()
    norm = clip_gradients([a, b], max_norm=1.3)
    assert norm == pytest.approx(13.0)  # sqrt(9 + 16 + 144), measured before clipping
    scale = 1.3 / 13.0
    assert torch.allclose(a.grad, torch.tensor([3.0, -4.0]) * scale, atol=1e-6)
    assert torch.allclose(b.grad, torch.tensor([12.0]) * scale, atol=1e-6)


def test_clip_by_value_then_norm_unchanged_when_small():
    a, b = _params_with_grads()
    norm = clip_gradients([a, b], max_value=3.5)
    assert torch.equal(a.grad, torch.tensor([3.0, -3.5]))
    assert torch.equal(b.grad, torch.tensor([3.5]))
    assert norm == pytest.approx(math.sqrt(9 + 3.5 ** 2 * 2))


def test_weight_decay_skips_biases_and_norm_gains():
    linear, norm = torch.nn.Linear(3, 2), torch.nn.LayerNorm(2)
    with torch.no_grad():
        linear.bias.fill_(1.0)
        norm.weight.fill_(2.0)
    before = [p.detach().clone() for p in (linear.weight, linear.bias, norm.weight)]
    optimizer = build_optimizer([*linear.parameters(), *norm.parameters()], "adamw", lr=0.1, weight_decay=0.5)
    for p in (*linear.parameters(), *norm.parameters()):
        p.grad = torch.zeros_like(p)
    optimizer.step()
    # AdamW with zero gradients only decays: w ← w (1 − lr·λ), and only for matrices.
    assert torch.allclose(linear.weight, before[0] * (1 - 0.1 * 0.5))
    assert torch.equal(linear.bias, before[1]) and torch.equal(norm.weight, before[2])


def test_adam_betas_reach_the_optimizer():
    p = torch.nn.Parameter(torch.zeros(1))
    optimizer = build_optimizer([p], "adam", lr=1.0, betas=(0.8, 0.9))
    assert optimizer.param_groups[0]["betas"] == (0.8, 0.9)
    p.grad = torch.tensor([2.0])
    optimizer.step()
    # First Adam step: m̂ = g, v̂ = g², so the update is lr · g / (|g| + eps) whatever the betas.
    assert float(p.detach()) == pytest.approx(-1.0, rel=1e-6)
    assert optimizer.state[p]["exp_avg"].item() == pytest.approx((1 - 0.8) * 2.0)
    assert optimizer.state[p]["exp_avg_sq"].item() == pytest.approx((1 - 0.9) * 4.0)


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_fused_adam_takes_the_same_steps_as_the_loop(name):
    torch.manual_seed(0)
    weights = [torch.randn(4, 3, dtype=torch.float64), torch.randn(3, dtype=torch.float64)]
    ours = [torch.nn.Parameter(w.clone()) for w in weights]
    plain = [torch.nn.Parameter(w.clone()) for w in weights]
    optimizer = build_optimizer(ours, name, lr=0.01, weight_decay=0.1, betas=(0.8, 0.95))
    assert optimizer.defaults["fused"]
    reference = getattr(torch.optim, "Adam" if name == "adam" else "AdamW")(
        [{"params": plain[:1]}, {"params": plain[1:], "weight_decay": 0.0}],
        lr=0.01, weight_decay=0.1, betas=(0.8, 0.95), foreach=False,
    )
    for step in range(5):
        grads = [torch.randn_like(w) for w in weights]
        for p, q, g in zip(ours, plain, grads):
            p.grad, q.grad = g.clone(), g.clone()
        optimizer.step()
        reference.step()
    for p, q in zip(ours, plain):
        assert torch.allclose(p, q, rtol=1e-12, atol=1e-14)


class _Stack(torch.nn.Module):
    """Embeddings, three numbered layers (one a torch.nn LSTM's `_l<k>` weights) and a head."""

    def __init__(self):
        super().__init__()
        self.embedding = torch.nn.Embedding(5, 3)
        self.layers = torch.nn.ModuleList([torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)])
        self.rnn = torch.nn.LSTM(3, 3, num_layers=2)
        self.head = torch.nn.Linear(3, 2)


def test_layer_lr_scales_follow_the_depth():
    model, decay = _Stack(), 0.5
    scales = {name: layer_lr_scales(model, decay)[p] for name, p in model.named_parameters()}
    # Layers 0 and 1 (the Linear stack and the LSTM's two layers share their numbers): D = 2.
    assert scales["embedding.weight"] == decay ** 3
    assert scales["layers.0.weight"] == scales["rnn.weight_hh_l0"] == decay ** 2
    assert scales["layers.1.bias"] == scales["rnn.bias_ih_l1"] == decay ** 1
    assert scales["head.weight"] == scales["head.bias"] == 1.0
    model.embedding.weight.requires_grad_(False)  # frozen weights are left out
    assert model.embedding.weight not in layer_lr_scales(model, decay)


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_layer_scaled_rates_are_the_sgd_steps_taken(weight_decay):
    torch.manual_seed(0)
    model, decay, lr = _Stack(), 0.5, 0.1
    scales = layer_lr_scales(model, decay)
    optimizer = build_optimizer(model.parameters(), "sgd", lr, weight_decay, lr_scales=scales)
    schedule = LRSchedule(optimizer, "cosine", lr, 10, warmup_steps=2)
    before = {p: p.detach().clone() for p in model.parameters()}
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    rate = schedule.apply(3)
    optimizer.step()
    for p in model.parameters():
        decayed = weight_decay if p.dim() >= 2 else 0.0
        expected = before[p] - rate * scales[p] * (p.grad + decayed * before[p])
        torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-7)


def test_layer_lr_decay_on_a_model_without_layers_or_embeddings_is_an_error():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 2))
    with pytest.raises(ConfigError, match=r"layer_lr_decay=0.5 would change nothing: .*0.weight"):
        layer_lr_scales(model, 0.5)
    assert set(layer_lr_scales(model, 1.0).values()) == {1.0}  # no decay asked: nothing to say
