"""LanguageModel: loss written out, truncated BPTT, greedy and sampled generation, tying."""

import pytest
import torch

from seqlab.decode.sampling import sample_next_token
from seqlab.models import LanguageModel, LMOutput, detach_state

VOCAB, HIDDEN = 10, 6


def make_model(cell="lstm", **kwargs):
    torch.manual_seed(0)
    return LanguageModel(VOCAB, HIDDEN, cell=cell, **kwargs).double().eval()


def random_ids(n, length, seed=0):
    return torch.randint(0, VOCAB, (n, length), generator=torch.Generator().manual_seed(seed))


def test_logits_and_loss_written_out_with_torch_lstm():
    model = make_model(embedding_dim=4, num_layers=2)
    lstm = torch.nn.LSTM(4, HIDDEN, num_layers=2, batch_first=True).double()
    lstm.load_state_dict(model.rnn.state_dict())
    ids = random_ids(3, 7)
    inputs, targets = ids[:, :-1], ids[:, 1:]
    out = model(inputs, targets=targets)
    assert isinstance(out, LMOutput)

    outputs, (h_n, c_n) = lstm(model.embedding.weight[inputs])
    logits = outputs @ model.head.weight.T + model.head.bias  # (N, L, V)
    log_probs = logits - logits.logsumexp(dim=-1, keepdim=True)
    picked = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (N, L)
    torch.testing.assert_close(out.logits, logits)
    torch.testing.assert_close(out.loss, -picked.mean())
    torch.testing.assert_close(out.state[0], h_n)
    torch.testing.assert_close(out.state[1], c_n)


@pytest.mark.parametrize("cell, options", [("lstm", {"num_layers": 2}), ("gru", {}),
                                           ("rnn", {"nonlinearity": "relu"}),
                                           ("lstm", {"peephole": True, "coupled": True})])
def test_chunks_with_carried_state_equal_one_run(cell, options):
    model = make_model(cell, **options)
    ids = random_ids(2, 9, seed=1)
    whole = model(ids)
    first = model(ids[:, :4])
    second = model(ids[:, 4:], detach_state(first.state))
    torch.testing.assert_close(torch.cat([first.logits, second.logits], dim=1), whole.logits)
    if cell == "lstm":
        torch.testing.assert_close(second.state[0], whole.state[0])
        torch.testing.assert_close(second.state[1], whole.state[1])
    else:
        torch.testing.assert_close(second.state, whole.state)


def test_detach_state_cuts_the_gradient_at_the_chunk_boundary():
    model = make_model("lstm")
    ids = random_ids(2, 8, seed=2)
    first = model(ids[:, :4])
    detached = detach_state(first.state)
    assert all(s.grad_fn is None and not s.requires_grad for s in detached)
    torch.testing.assert_close(detached[0], first.state[0])
    assert detach_state(None) is None
    assert LanguageModel.detach_state is detach_state

    # The second chunk's loss then depends on the first chunk's tokens only through values:
    # the embedding rows used only in chunk one get no gradient.
    ids = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]])
    first = model(ids[:, :4])
    loss = model(ids[:, 4:], detach_state(first.state), targets=ids[:, 4:]).loss
    loss.backward()
    grad = model.embedding.weight.grad
    assert torch.count_nonzero(grad[[1, 2, 3, 4]]) == 0
    assert torch.count_nonzero(grad[[5, 6, 7, 8]]) > 0


def test_greedy_generation_equals_a_hand_written_loop():
    model = make_model("gru", num_layers=2)
    prompt = random_ids(2, 3, seed=3)
    generated = model.generate(prompt, max_new_tokens=6, temperature=0)
    # By hand: rerun the whole prefix each step and take the argmax of the last position.
    sequence = prompt
    for _ in range(6):
        next_token = model(sequence).logits[:, -1].argmax(dim=-1, keepdim=True)  # (N, 1)
        sequence = torch.cat([sequence, next_token], dim=1)
    assert generated.dtype == torch.long
    assert torch.equal(generated, sequence)


def test_sampled_generation_is_reproducible_and_follows_sample_next_token():
    model = make_model("lstm")
    prompt = [1, 4, 2]
    settings = {"temperature": 0.9, "top_k": 6, "top_p": 0.95}
    runs = [model.generate(prompt, 8, generator=torch.Generator().manual_seed(7), **settings)
            for _ in range(2)]
    assert torch.equal(runs[0], runs[1])
    assert runs[0].shape == (1, 11) and runs[0][0, :3].tolist() == prompt

    generator = torch.Generator().manual_seed(7)
    sequence = torch.tensor([prompt])
    for _ in range(8):
        logits = model(sequence).logits[:, -1]
        next_token = sample_next_token(logits, generator=generator, **settings)
        sequence = torch.cat([sequence, next_token[:, None]], dim=1)
    assert torch.equal(runs[0], sequence)


def test_generate_runs_without_dropout_and_restores_training_mode():
    model = make_model("lstm", num_layers=2, dropout=0.5)
    prompt = random_ids(1, 4, seed=4)
    expected = model.generate(prompt, 5, temperature=0)  # model is in eval mode here
    model.train()
    assert torch.equal(model.generate(prompt, 5, temperature=0), expected)
    assert model.training
    assert torch.equal(model.generate(prompt, 0), prompt)
    with pytest.raises(ValueError, match="prompt_ids"):
        model.generate([], 3)


def test_tied_weights_share_one_matrix():
    model = LanguageModel(VOCAB, HIDDEN, tie_weights=True)
    untied = LanguageModel(VOCAB, HIDDEN)
    assert model.head.weight is model.embedding.weight
    assert untied.num_parameters() - model.num_parameters() == VOCAB * HIDDEN
    lstm = 4 * HIDDEN * (HIDDEN + HIDDEN + 2)
    assert untied.num_parameters() == 2 * VOCAB * HIDDEN + VOCAB + lstm
    with pytest.raises(ValueError, match="embedding_dim == hidden_size"):
        LanguageModel(VOCAB, HIDDEN, embedding_dim=4, tie_weights=True)


def test_memorises_a_short_sequence():
    torch.manual_seed(0)
    text = [0, 3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9]
    ids = torch.tensor([text])
    model = LanguageModel(VOCAB, 32, cell="lstm", embedding_dim=16)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(150):
        optimizer.zero_grad()
        loss = model(ids[:, :-1], targets=ids[:, 1:]).loss
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05
    assert model.generate(text[:1], len(text) - 1, temperature=0)[0].tolist() == text
