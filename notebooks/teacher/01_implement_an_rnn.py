# %% [markdown]
# # Practical session 1 — Implement an RNN
#
# You will write, in plain PyTorch and from their equations:
#
# 1. the vanilla (Elman) RNN cell, and check it against `torch.nn.RNNCell`;
# 2. backpropagation through time (BPTT), by autograd and then by hand on a tiny case;
# 3. two tasks: **many-to-one** (sentiment of a sentence) and **many-to-many** (a tag per step);
# 4. the **vanishing gradient**, seen as ‖∂L/∂h_t‖ through time, and **gradient clipping**;
# 5. the **LSTM** and **GRU** cells, and the gradient flow they give;
# 6. **bidirectional** layers and their merge modes.
#
# Each exercise is a cell marked `# TODO`, followed by a check from `seqlab.course` that runs
# your code and the reference (torch.nn / seqlab) on random inputs. A right answer prints a line
# starting with ✓; a wrong one stops with a message saying what is wrong (a shape, the gate
# order, a missing bias or term, or by how much the numbers differ).
#
# Shapes: N batch, T steps, H_in input features, H hidden features.

# %%
import random
import re
import time
from collections import Counter

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

import seqlab.nn
from seqlab import course
from seqlab.data import tasks

torch.manual_seed(0)
random.seed(0)
torch.set_num_threads(1)  # tiny models: one thread is fastest, and fair on a shared machine
started, started_cpu = time.time(), time.process_time()

# %% [markdown]
# ## 1. The vanilla RNN cell
#
# An Elman RNN reads x_1 … x_T one step at a time and keeps a state h_t:
#
# $$h_t = \tanh(W_{ih}\, x_t + b_{ih} + W_{hh}\, h_{t-1} + b_{hh})$$
#
# with W_ih (H, H_in), W_hh (H, H) and two biases (H,) — torch.nn's names and layout. Inputs
# come in batches: x (N, H_in), h (N, H); `x @ W.T` applies W to every row.

# %%
def rnn_cell(x, h, weight_ih, weight_hh, bias_ih, bias_hh):
    """One step of a tanh RNN: x (N, H_in), h (N, H) -> h' (N, H)."""
    return torch.tanh(x @ weight_ih.T + bias_ih + h @ weight_hh.T + bias_hh)


course.check_rnn_cell(rnn_cell)

# %% [markdown]
# A layer is the cell applied along the sequence, the same weights at every step. Running it
# over a batch gives exactly what `torch.nn.RNN` gives (here with its own weights):

# %%
def rnn_layer(xs, h0, cell, weights):
    """xs (T, N, H_in), h0 (N, H) -> all states (T, N, H)."""
    h, states = h0, []
    for x in xs:  # one step per time step: the loop BPTT unrolls
        h = cell(x, h, *weights)
        states.append(h)
    return torch.stack(states)


reference = nn.RNN(3, 4)
weights = (reference.weight_ih_l0, reference.weight_hh_l0, reference.bias_ih_l0,
           reference.bias_hh_l0)
xs = torch.randn(6, 2, 3)  # (T, N, H_in)
with torch.no_grad():
    ours = rnn_layer(xs, torch.zeros(2, 4), rnn_cell, weights)
    theirs, _ = reference(xs)
print("largest difference from torch.nn.RNN:", float((ours - theirs).abs().max()))

# %% [markdown]
# ## 2. Backpropagation through time
#
# Unrolled, the RNN is a deep feed-forward network whose layers share W_hh. Autograd
# differentiates the unrolled graph for us. On a tiny case (T = 4, H_in = 2, H = 3, one
# sequence), with a loss that reads every state, L = Σ_t g_t · h_t:

# %%
T, H_in, H = 4, 2, 3
xs_small, h0_small = torch.randn(T, H_in), torch.randn(H)
W_ih, W_hh = torch.randn(H, H_in) * 0.7, torch.randn(H, H) * 0.7
b, g = torch.randn(H) * 0.5, torch.randn(T, H)  # g_t = ∂L/∂h_t from the loss at step t alone

params = [p.clone().requires_grad_(True) for p in (W_ih, W_hh, b, h0_small)]
h, loss = params[3], 0.0
for t in range(T):
    h = torch.tanh(params[0] @ xs_small[t] + params[1] @ h + params[2])
    loss = loss + (g[t] * h).sum()
loss.backward()
print("∂L/∂W_hh by autograd:\n", params[1].grad)

# %% [markdown]
# Now by hand. With a_t = W_ih x_t + W_hh h_{t-1} + b and h_t = tanh(a_t), go backwards from
# t = T, carrying what flows back from the future through W_hh:
#
# $$\delta h_t = g_t + W_{hh}^\top \delta a_{t+1} \quad(\delta a_{T+1} = 0), \qquad
# \delta a_t = \delta h_t \odot (1 - h_t^2)$$
#
# $$\frac{\partial L}{\partial W_{ih}} = \sum_t \delta a_t\, x_t^\top, \quad
# \frac{\partial L}{\partial W_{hh}} = \sum_t \delta a_t\, h_{t-1}^\top, \quad
# \frac{\partial L}{\partial b} = \sum_t \delta a_t, \quad
# \frac{\partial L}{\partial h_0} = W_{hh}^\top \delta a_1$$

# %%
def bptt(xs, h0, weight_ih, weight_hh, bias, grad_hs):
    """xs (T, H_in), h0 (H,), grad_hs (T, H) -> (∂L/∂W_ih, ∂L/∂W_hh, ∂L/∂b, ∂L/∂h_0)."""
    hs = [h0]  # the forward pass again, keeping every state
    for x in xs:
        hs.append(torch.tanh(weight_ih @ x + weight_hh @ hs[-1] + bias))
    grad_ih, grad_hh, grad_b = (torch.zeros_like(t) for t in (weight_ih, weight_hh, bias))
    delta_a = torch.zeros_like(h0)
    for t in range(len(xs), 0, -1):
        delta_h = grad_hs[t - 1] + weight_hh.T @ delta_a
        delta_a = delta_h * (1 - hs[t] ** 2)
        grad_ih += torch.outer(delta_a, xs[t - 1])
        grad_hh += torch.outer(delta_a, hs[t - 1])
        grad_b += delta_a
    return grad_ih, grad_hh, grad_b, weight_hh.T @ delta_a


course.check_bptt(bptt)
by_hand = bptt(xs_small, h0_small, W_ih, W_hh, b, g)
print("∂L/∂W_hh by hand − by autograd:", float((by_hand[1] - params[1].grad).abs().max()))

# %% [markdown]
# ## 3. Many-to-one: the sentiment of a sentence
#
# The last state h_T summarises the sentence; a linear layer on it gives the class. Data: the
# MR movie-review sentences (Pang & Lee 2005) when `../shared/data/sentences/mr` is at hand;
# otherwise seqlab's generated fill-in-the-blank task (name the animal from the end of the
# sentence), which the next cell says it uses.
#
# Your cell computes exactly what `seqlab.nn.RNN` computes at each step; from here on we train
# with that layer, which runs the same equations on torch's fused kernel, and feeds it the
# `lengths` so that h_T is each sentence's last real word, not padding.

# %%
def words(text):
    return re.findall(r"[\w']+|[^\w\s]", text.lower())


mr = course.shared_data("sentences", "mr")
if mr is not None:
    def read_tsv(path):
        rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()[1:]]
        return [(text, label) for text, label in rows]

    train_rows, valid_rows = read_tsv(mr / "train.tsv"), read_tsv(mr / "valid.tsv")
    print(f"MR sentiment: {len(train_rows)} training and {len(valid_rows)} validation sentences")
else:
    generated = tasks.fill_in_the_blank(3000, seed=0)
    train_rows, valid_rows = generated[:2500], generated[2500:]
    print("../shared/data/sentences/mr is absent: using the generated fill-in-the-blank task "
          f"instead ({len(train_rows)} / {len(valid_rows)} sentences)")

counts = Counter(w for text, _ in train_rows for w in words(text))
vocab = {w: i + 2 for i, (w, c) in enumerate(counts.most_common()) if c >= 2}  # 0 pad, 1 unknown
labels = sorted({label for _, label in train_rows})
print(f"{len(vocab) + 2} words, labels {labels}")


def encode(rows, max_length=40):
    ids = [[vocab.get(w, 1) for w in words(text)][:max_length] or [1] for text, _ in rows]
    lengths = torch.tensor([len(s) for s in ids])
    padded = torch.zeros(len(ids), int(lengths.max()), dtype=torch.long)  # (N, L), 0 = pad
    for row, s in enumerate(ids):
        padded[row, :len(s)] = torch.tensor(s)
    return padded, lengths, torch.tensor([labels.index(label) for _, label in rows])


train_x, train_lengths, train_y = encode(train_rows)
valid_x, valid_lengths, valid_y = encode(valid_rows)


class SentenceClassifier(nn.Module):
    """Embedding -> RNN -> the state at each sentence's last word -> a linear layer."""

    def __init__(self, vocab_size, num_classes, embedding_dim=64, hidden_size=64):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        self.rnn = seqlab.nn.RNN(embedding_dim, hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, num_classes)

    def forward(self, ids, lengths):
        _, h_n = self.rnn(self.embedding(ids), lengths=lengths)  # h_n (1, N, H)
        return self.head(h_n[-1])  # (N, C)


def accuracy(model, x, lengths, y):
    model.eval()
    with torch.no_grad():
        return float((model(x, lengths).argmax(-1) == y).float().mean())


classifier = SentenceClassifier(len(vocab) + 2, len(labels))
optimizer = torch.optim.Adam(classifier.parameters(), lr=2e-3)
for epoch in range(3):
    classifier.train()
    order = torch.randperm(len(train_y))
    for start in range(0, len(order), 64):
        batch = order[start:start + 64]
        loss = F.cross_entropy(classifier(train_x[batch], train_lengths[batch]), train_y[batch])
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(classifier.parameters(), 1.0)
        optimizer.step()
    print(f"epoch {epoch + 1}: valid accuracy "
          f"{accuracy(classifier, valid_x, valid_lengths, valid_y):.3f}")

# %% [markdown]
# ## 4. Many-to-many (aligned): one tag per step
#
# Now every state h_t gets its own output. A generated task: read a random sequence of
# symbols 0..7 and, at each step t, output the symbol seen two steps before, y_t = x_{t−2}
# (nothing to predict at t = 1, 2). The state has to carry two symbols along.

# %%
def echo_task(size, length=20, delay=2, symbols=8, seed=0):
    """x (N, T) symbols; y (N, T) = x shifted by `delay` (future if delay < 0); -100 = no target."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randint(0, symbols, (size, length), generator=generator)
    y = torch.full_like(x, -100)
    if delay >= 0:
        y[:, delay:] = x[:, :length - delay]
    else:
        y[:, :delay] = x[:, -delay:]
    return x, y


class Tagger(nn.Module):
    """Embedding -> recurrent layer -> a linear layer on every step."""

    def __init__(self, layer, symbols=8, embedding_dim=16):
        super().__init__()
        self.embedding = nn.Embedding(symbols, embedding_dim)
        self.rnn = layer
        self.head = nn.LazyLinear(symbols)

    def forward(self, x):
        outputs, _ = self.rnn(self.embedding(x))  # (N, T, D·H)
        return self.head(outputs)  # (N, T, symbols)


def train_tagger(model, delay, steps=300, lr=1e-2):
    x, y = echo_task(4096, delay=delay, seed=1)
    test_x, test_y = echo_task(512, delay=delay, seed=2)
    model(x[:1])  # builds the lazy head
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for step in range(steps):
        batch = torch.randint(0, len(x), (64,))
        loss = F.cross_entropy(model(x[batch]).flatten(0, 1), y[batch].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        predicted = model(test_x).argmax(-1)
    scored = test_y != -100
    return float((predicted[scored] == test_y[scored]).float().mean())


echo_accuracy = train_tagger(Tagger(seqlab.nn.RNN(16, 64, batch_first=True)), delay=2)
print(f"y_t = x_(t-2): per-step accuracy {echo_accuracy:.3f} (chance 0.125)")

# %% [markdown]
# ## 5. The vanishing gradient
#
# BPTT multiplies the gradient by the step Jacobian ∂h_t/∂h_{t−1} = diag(1 − h_t²) W_hh once per
# step. For a loss read at the last step only, ‖∂L/∂h_t‖ therefore shrinks (or grows)
# geometrically as t moves away from T (Bengio et al. 1994; Pascanu et al. 2013). We measure it
# with your cell: keep each h_t's gradient with `retain_grad`.

# %%
def gradient_through_time(cell, weights, steps=60, hidden=32, lstm=False, seed=0):
    """‖∂L/∂h_t‖ for t = 1..T, L = a random projection of h_T (one sequence)."""
    generator = torch.Generator().manual_seed(seed)
    xs = torch.randn(steps, 1, weights[0].shape[1], generator=generator)
    h = torch.zeros(1, hidden, requires_grad=True)  # so that every h_t is in the graph
    c = torch.zeros(1, hidden)
    states = []
    for x in xs:
        if lstm:
            h, c = cell(x, h, c, *weights)
        else:
            h = cell(x, h, *weights)
        h.retain_grad()
        states.append(h)
    readout = torch.randn(hidden, generator=generator)
    (states[-1] @ readout).sum().backward()
    return [float(s.grad.norm()) for s in states]


def torch_weights(module):
    return tuple(p.detach().requires_grad_(False) for p in
                 (module.weight_ih, module.weight_hh, module.bias_ih, module.bias_hh))


torch.manual_seed(0)
flows = {"RNN (tanh)": gradient_through_time(rnn_cell, torch_weights(nn.RNNCell(8, 32)))}
plt.figure(figsize=(6, 3.5))
for name, norms in flows.items():
    plt.semilogy(range(1, len(norms) + 1), norms, label=name)
plt.xlabel("step t")
plt.ylabel("‖∂L/∂h_t‖")
plt.title("Gradient of a loss at the last step, through time")
plt.legend()
plt.show()
norms = flows["RNN (tanh)"]
print(f"RNN: ‖∂L/∂h_T‖ = {norms[-1]:.3g}, ‖∂L/∂h_1‖ = {norms[0]:.3g} "
      f"(ratio {norms[0] / norms[-1]:.1e})")

# %% [markdown]
# ## 6. Gradient clipping
#
# The same product can also **explode** (large W_hh): one step then throws the weights far
# away. Clipping by norm rescales all gradients together when their global norm exceeds a
# threshold (Pascanu et al. 2013):
#
# $$\|g\| = \sqrt{\textstyle\sum_k \|g_k\|^2}, \qquad
# g_k \leftarrow g_k \cdot \min\!\left(1, \frac{\text{max\_norm}}{\|g\|}\right)$$
#
# The direction is kept, only the length shrinks.

# %%
def clip_grad_norm(grads, max_norm):
    """grads: a list of tensors -> (the clipped list, the global norm before clipping)."""
    total = torch.sqrt(sum((g ** 2).sum() for g in grads))
    scale = min(1.0, max_norm / (float(total) + 1e-6))
    return [g * scale for g in grads], total


course.check_clip_grad_norm(clip_grad_norm)

# An exploding case: W_hh scaled up, the loss at the last of 60 steps.
big = nn.RNNCell(8, 32)
with torch.no_grad():
    big.weight_hh.mul_(6.0)
weights = [p.detach().clone().requires_grad_(True) for p in torch_weights(big)]
xs_long = torch.randn(60, 1, 8)
h = torch.zeros(1, 32)
for x in xs_long:
    h = rnn_cell(x, h, *weights)
h.sum().backward()
clipped, total = clip_grad_norm([w.grad for w in weights], max_norm=1.0)
print(f"gradient norm {float(total):.3g} -> {float(torch.sqrt(sum((c ** 2).sum() for c in clipped))):.3g}"
      " after clipping")

# %% [markdown]
# ## 7. LSTM and GRU cells
#
# **LSTM** (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000). Four
# gates from the same input and state; the cell c_t is updated **additively**, which is what
# lets the gradient through:
#
# $$\begin{aligned}
# i &= \sigma(W_{ii} x + b_{ii} + W_{hi} h + b_{hi}) &
# f &= \sigma(W_{if} x + b_{if} + W_{hf} h + b_{hf}) \\
# g &= \tanh(W_{ig} x + b_{ig} + W_{hg} h + b_{hg}) &
# o &= \sigma(W_{io} x + b_{io} + W_{ho} h + b_{ho}) \\
# c' &= f \odot c + i \odot g & h' &= o \odot \tanh(c')
# \end{aligned}$$
#
# torch.nn stores the four gates' rows stacked in W_ih (4H, H_in) and W_hh (4H, H) in the order
# **i, f, g, o**: compute all pre-activations with two products, then `chunk(4, dim=1)`.

# %%
def lstm_cell(x, h, c, weight_ih, weight_hh, bias_ih, bias_hh):
    """x (N, H_in), h and c (N, H) -> (h', c'), each (N, H). Gate rows in the order i, f, g, o."""
    gates = x @ weight_ih.T + bias_ih + h @ weight_hh.T + bias_hh  # (N, 4H)
    i, f, g, o = gates.chunk(4, dim=1)
    c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_next = torch.sigmoid(o) * torch.tanh(c_next)
    return h_next, c_next


course.check_lstm_cell(lstm_cell)

# %% [markdown]
# **GRU** (Cho et al. 2014), in torch's form where the reset gate scales the recurrent part of
# the candidate *after* its product; gate rows in the order **r, z, n**:
#
# $$\begin{aligned}
# r &= \sigma(W_{ir} x + b_{ir} + W_{hr} h + b_{hr}) &
# z &= \sigma(W_{iz} x + b_{iz} + W_{hz} h + b_{hz}) \\
# n &= \tanh(W_{in} x + b_{in} + r \odot (W_{hn} h + b_{hn})) &
# h' &= (1 - z) \odot n + z \odot h
# \end{aligned}$$

# %%
def gru_cell(x, h, weight_ih, weight_hh, bias_ih, bias_hh):
    """x (N, H_in), h (N, H) -> h' (N, H). Gate rows in the order r, z, n."""
    x_r, x_z, x_n = (x @ weight_ih.T + bias_ih).chunk(3, dim=1)
    h_r, h_z, h_n = (h @ weight_hh.T + bias_hh).chunk(3, dim=1)
    r = torch.sigmoid(x_r + h_r)
    z = torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)
    return (1 - z) * n + z * h


course.check_gru_cell(gru_cell)

# %% [markdown]
# The same measurement as in section 5, now with your three cells at torch's default
# initialisation. The LSTM's additive cell path and the GRU's interpolation z ⊙ h let the
# gradient of distant steps decay far more slowly (here about 10⁴ times more reaches step 1
# after 60 steps; a forget-gate bias of 1, as Jozefowicz et al. 2015 advise, keeps even more).

# %%
torch.manual_seed(0)
flows["LSTM"] = gradient_through_time(lstm_cell, torch_weights(nn.LSTMCell(8, 32)), lstm=True)
flows["GRU"] = gradient_through_time(gru_cell, torch_weights(nn.GRUCell(8, 32)))
plt.figure(figsize=(6, 3.5))
for name, norms in flows.items():
    plt.semilogy(range(1, len(norms) + 1), norms, label=name)
plt.xlabel("step t")
plt.ylabel("‖∂L/∂h_t‖")
plt.title("Gradient through time: RNN, LSTM, GRU")
plt.legend()
plt.show()
for name, norms in flows.items():
    print(f"{name:11s} ‖∂L/∂h_1‖ / ‖∂L/∂h_T‖ = {norms[0] / norms[-1]:.1e}")

# %% [markdown]
# ## 8. Bidirectional layers and merge modes
#
# A bidirectional layer runs one RNN left to right and another right to left, then merges the
# two outputs of each step. seqlab offers four merge modes (`merge_mode` of `seqlab.nn.RNN /
# LSTM / GRU`): with →h_t and ←h_t each (T, N, H),
#
# | mode | output | size |
# |---|---|---|
# | `concat` | [→h_t ; ←h_t] | 2H |
# | `sum` | →h_t + ←h_t | H |
# | `mean` | (→h_t + ←h_t) / 2 | H |
# | `max` | elementwise max(→h_t, ←h_t) | H |

# %%
def merge(forward, backward, merge_mode):
    """forward, backward (T, N, H) -> merged (T, N, 2H) for concat, else (T, N, H)."""
    if merge_mode == "concat":
        return torch.cat([forward, backward], dim=-1)
    if merge_mode == "sum":
        return forward + backward
    if merge_mode == "mean":
        return (forward + backward) / 2
    return torch.maximum(forward, backward)


course.check_merge(merge)

# %% [markdown]
# With your GRU cell and your merge, a bidirectional GRU layer is two loops; it equals
# `seqlab.nn.GRU(bidirectional=True, merge_mode=...)` holding the same weights:

# %%
def bidirectional_gru(xs, layer, merge_mode):
    """xs (T, N, H_in) -> merged outputs, with the weights of a seqlab/torch GRU layer."""
    forward_weights = (layer.weight_ih_l0, layer.weight_hh_l0, layer.bias_ih_l0, layer.bias_hh_l0)
    backward_weights = (layer.weight_ih_l0_reverse, layer.weight_hh_l0_reverse,
                        layer.bias_ih_l0_reverse, layer.bias_hh_l0_reverse)
    h0 = torch.zeros(xs.shape[1], layer.hidden_size)
    forward = rnn_layer(xs, h0, gru_cell, forward_weights)
    backward = rnn_layer(xs.flip(0), h0, gru_cell, backward_weights).flip(0)  # back in time order
    return merge(forward, backward, merge_mode)


xs = torch.randn(7, 3, 5)
for mode in ("concat", "sum", "mean", "max"):
    layer = seqlab.nn.GRU(5, 4, bidirectional=True, merge_mode=mode)
    with torch.no_grad():
        ours, (theirs, _) = bidirectional_gru(xs, layer, mode), layer(xs)
    print(f"{mode:6s} output {tuple(ours.shape)}, largest difference from seqlab.nn.GRU: "
          f"{float((ours - theirs).abs().max()):.1e}")

# %% [markdown]
# What the backward direction buys: output the symbol **two steps ahead**, y_t = x_{t+2}. A
# left-to-right layer has not read it yet; a bidirectional one has.

# %%
for name, layer in [("GRU, left to right", seqlab.nn.GRU(16, 32, batch_first=True)),
                    ("GRU, bidirectional", seqlab.nn.GRU(16, 32, batch_first=True,
                                                         bidirectional=True))]:
    print(f"y_t = x_(t+2), {name}: accuracy {train_tagger(Tagger(layer), delay=-2, steps=200):.3f}")
print(f"notebook ran in {time.time() - started:.0f} s "
      f"({time.process_time() - started_cpu:.0f} s of CPU time)")
