# %% [markdown]
# # Practical session 2 — Implement a Seq2Seq model
#
# Many-to-many, **unaligned**: the output has its own length. You will build, in plain PyTorch:
#
# 1. an **encoder** (a bidirectional GRU) and the **encoder vector** that summarises the source;
# 2. a **decoder** that starts from it, trained with **teacher forcing**;
# 3. **greedy decoding**;
# 4. **Bahdanau attention**, and its weights as a heat map;
# 5. **beam search**;
# 6. **BLEU** with sacrebleu;
#
# first on date normalisation (seqlab's generated task: "Tue 3 Mar 1998", "03/03/98", "the 3rd
# of March, 1998" → "1998-03-03"), then on a slice of Multi30k (German → English).
#
# Your model exposes the *step API* of `seqlab.decode` (`encode`, `init_state`, `step`,
# `reorder_state`, `reorder_memory`), so the checks can compare your decoding with seqlab's, and
# seqlab's beam search can drive your model too.
#
# Shapes: N sentences, S source length, T target length, V vocabulary, E embedding size,
# H decoder state size, A attention size.

# %%
import gzip
import random
import time
from collections import Counter
from dataclasses import dataclass

import matplotlib.pyplot as plt
import sacrebleu
import torch
import torch.nn.functional as F
from torch import nn

import seqlab.nn
from seqlab import course
from seqlab.data import tasks
from seqlab.decode import beam_search

torch.manual_seed(0)
random.seed(0)
torch.set_num_threads(1)  # tiny models: one thread is fastest, and fair on a shared machine
started, started_cpu = time.time(), time.process_time()

# %% [markdown]
# ## 1. Data: dates, character by character

# %%
pairs = tasks.dates(12000, seed=0)
train_pairs, valid_pairs = pairs[:11000], pairs[11000:]
for source, target in pairs[:4]:
    print(f"{source!r:32} -> {target!r}")

PAD, BOS, EOS, UNK = 0, 1, 2, 3


class Vocabulary:
    """Symbols <-> ids; ids 0-3 are <pad>, <bos>, <eos>, <unk>."""

    def __init__(self, sequences, min_count=1):
        counts = Counter(s for seq in sequences for s in seq)
        symbols = sorted(s for s, count in counts.items() if count >= min_count)
        self.itos = ["<pad>", "<bos>", "<eos>", "<unk>", *symbols]
        self.stoi = {s: i for i, s in enumerate(self.itos)}

    def __len__(self):
        return len(self.itos)

    def encode(self, seq):
        return [self.stoi.get(s, UNK) for s in seq]

    def decode(self, ids, joiner=""):
        return joiner.join(self.itos[i] for i in ids)


def batch_of(pairs, source_vocab, target_vocab):
    """src (N, S) padded, src_lengths (N,), tgt (N, T) = <bos> y <eos>, padded."""
    sources = [source_vocab.encode(s) for s, _ in pairs]
    targets = [[BOS, *target_vocab.encode(t), EOS] for _, t in pairs]
    src = torch.full((len(pairs), max(map(len, sources))), PAD)
    tgt = torch.full((len(pairs), max(map(len, targets))), PAD)
    for row, (s, t) in enumerate(zip(sources, targets)):
        src[row, :len(s)], tgt[row, :len(t)] = torch.tensor(s), torch.tensor(t)
    return src, torch.tensor([len(s) for s in sources]), tgt


source_vocab = Vocabulary(s for s, _ in train_pairs)
target_vocab = Vocabulary(t for _, t in train_pairs)
print(f"{len(source_vocab)} source symbols, {len(target_vocab)} target symbols")

# %% [markdown]
# ## 2. Encoder, encoder vector, decoder
#
# **Encoder.** A bidirectional GRU reads the source; its outputs (N, S, 2H_e) are kept for
# attention, and its two final states, concatenated, are the **encoder vector** (Sutskever et
# al. 2014; Cho et al. 2014): a fixed-size summary of the whole sentence.
#
# **Decoder.** A GRU cell whose first state is a projection of the encoder vector,
# s_0 = tanh(W_b [→h_S ; ←h_1]). At each step it reads the previous target token y_{t−1} and a
# context vector c_t — without attention, always the encoder vector; with attention, a fresh
# weighted mean of the encoder outputs — and predicts y_t:
#
# $$s_t = \mathrm{GRU}([e(y_{t-1}) ; c_t],\ s_{t-1}), \qquad
# p(y_t \mid y_{<t}, x) = \mathrm{softmax}(W_o [s_t ; c_t] + b_o)$$
#
# **Teacher forcing.** While training, the decoder is fed the *true* previous token, not its
# own guess, so all steps learn at once from the start (Williams & Zipser 1989); the loss is the
# cross-entropy of every target token.

# %%
@dataclass
class Memory:
    """What the encoder leaves for the decoder."""

    outputs: torch.Tensor  # (N, S, 2H_e), keys and values of attention
    mask: torch.Tensor  # (N, S) bool, True on real source positions
    vector: torch.Tensor  # (N, 2H_e), the encoder vector

    def index_select(self, index):
        return Memory(self.outputs[index], self.mask[index], self.vector[index])


class Seq2Seq(nn.Module):
    """Bidirectional GRU encoder, GRU decoder; attention=None uses the encoder vector alone."""

    def __init__(self, source_size, target_size, embedding_dim=32, hidden_size=64,
                 attention=None):
        super().__init__()
        self.source_embedding = nn.Embedding(source_size, embedding_dim, padding_idx=PAD)
        self.encoder = seqlab.nn.GRU(embedding_dim, hidden_size, batch_first=True,
                                     bidirectional=True)
        self.bridge = nn.Linear(2 * hidden_size, hidden_size)
        self.target_embedding = nn.Embedding(target_size, embedding_dim, padding_idx=PAD)
        self.attention = attention
        self.decoder = nn.GRUCell(embedding_dim + 2 * hidden_size, hidden_size)
        self.out = nn.Linear(hidden_size + 2 * hidden_size, target_size)

    def encode(self, src, src_lengths):
        outputs, h_n = self.encoder(self.source_embedding(src), lengths=src_lengths)
        # outputs (N, S, 2H); h_n (2, N, H): the forward state at each sentence's last real
        # character and the backward state at its first
        mask = torch.arange(src.size(1)) < src_lengths[:, None]  # (N, S)
        return Memory(outputs, mask, torch.cat([h_n[0], h_n[1]], dim=-1))

    def init_state(self, memory):
        return torch.tanh(self.bridge(memory.vector))  # s_0 (N, H)

    def step(self, prev_tokens, state, memory):
        """prev_tokens (N,) -> log_probs (N, V), new state (N, H), attention weights (N, S)."""
        if self.attention is None:
            context, weights = memory.vector, None  # (N, 2H)
        else:  # Bahdanau: attend with the previous state, before the recurrent step
            context, weights = self.attention(state, memory.outputs, memory.outputs, memory.mask)
        embedded = self.target_embedding(prev_tokens)  # (N, E)
        state = self.decoder(torch.cat([embedded, context], dim=-1), state)  # (N, H)
        logits = self.out(torch.cat([state, context], dim=-1))  # (N, V)
        return torch.log_softmax(logits, dim=-1), state, weights

    def reorder_state(self, state, index):
        return state[index]

    def reorder_memory(self, memory, index):
        return memory.index_select(index)

    def forward(self, src, src_lengths, tgt):
        """Teacher forcing: the mean cross-entropy of tgt[:, 1:] given tgt[:, :-1]."""
        memory = self.encode(src, src_lengths)
        state = self.init_state(memory)
        log_probs = []
        for t in range(tgt.size(1) - 1):
            step_log_probs, state, _ = self.step(tgt[:, t], state, memory)  # the TRUE y_{t-1}
            log_probs.append(step_log_probs)
        log_probs = torch.stack(log_probs, dim=1)  # (N, T-1, V)
        return F.nll_loss(log_probs.flatten(0, 1), tgt[:, 1:].flatten(), ignore_index=PAD)


def train_seq2seq(model, pairs, steps, batch_size=64, lr=3e-3, log_every=100):
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for step in range(1, steps + 1):
        batch = random.sample(pairs, batch_size)
        loss = model(*batch_of(batch, source_vocab, target_vocab))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % log_every == 0:
            print(f"step {step}: loss {loss.item():.3f}")
    return model.eval()


# %% [markdown]
# ## 3. Greedy decoding
#
# At test time there is no true previous token: the decoder feeds back its own most likely
# token, y_t = argmax_y log p(y | y_<t, x), from <bos> until it writes <eos> (left out of the
# result) or `max_length` steps. The check runs your function on small random seqlab models,
# so it needs no training. Decode the whole batch at once: each `model.step` call takes
# (N,) previous tokens; keep going until every sentence has ended.

# %%
def greedy(model, src, src_lengths, bos_id, eos_id, max_length):
    """src (N, S), src_lengths (N,) -> a list of N token lists (without <bos> / <eos>)."""
    memory = model.encode(src, src_lengths)
    state = model.init_state(memory)
    prev = torch.full((src.size(0),), bos_id)
    outputs, finished = [[] for _ in range(src.size(0))], [False] * src.size(0)
    for _ in range(max_length):
        log_probs, state, _ = model.step(prev, state, memory)
        prev = log_probs.argmax(dim=-1)  # (N,)
        for row, token in enumerate(prev.tolist()):
            if not finished[row]:
                if token == eos_id:
                    finished[row] = True
                else:
                    outputs[row].append(token)
        if all(finished):
            break
    return outputs


course.check_greedy_decode(greedy)

# %% [markdown]
# ## 4. Training with teacher forcing, decoding greedily
#
# The model without attention first: the decoder sees the source only through the encoder
# vector. 500 steps of 64 dates.

# %%
plain = train_seq2seq(Seq2Seq(len(source_vocab), len(target_vocab)), train_pairs, steps=500)


def translate(model, pairs, decode=greedy, max_length=12, joiner=""):
    src, lengths, _ = batch_of(pairs, source_vocab, target_vocab)
    with torch.no_grad():
        outputs = decode(model, src, lengths, BOS, EOS, max_length)
    return [target_vocab.decode(tokens, joiner) for tokens in outputs]


def exact_match(model, pairs):
    return sum(h == t for h, (_, t) in zip(translate(model, pairs), pairs)) / len(pairs)


for (source, target), output in zip(valid_pairs[:4], translate(plain, valid_pairs[:4])):
    print(f"{source!r:32} -> {output!r} (expected {target!r})")
print(f"without attention: exact match {exact_match(plain, valid_pairs):.3f} on "
      f"{len(valid_pairs)} dates")

# %% [markdown]
# ## 5. Bahdanau attention
#
# One fixed vector for the whole source is a bottleneck. Additive attention (Bahdanau, Cho &
# Bengio 2015) lets each decoder step look again at every encoder output k_s, with the previous
# decoder state q as the query:
#
# $$e_s = v^\top \tanh(W_q\, q + W_k\, k_s), \qquad
# a = \mathrm{softmax}(e) \text{ over the real positions}, \qquad c = \sum_s a_s\, k_s$$
#
# W_q (A, H) and W_k (A, 2H_e) are `nn.Linear` layers without bias named `query_proj` and
# `key_proj`, v (A,) a parameter named `v` (the names of `seqlab.nn.AdditiveAttention`). Padding
# positions must get weight exactly 0: fill their scores with −inf before the softmax.

# %%
class BahdanauAttention(nn.Module):
    def __init__(self, query_size, key_size, attention_size):
        super().__init__()
        self.query_proj = nn.Linear(query_size, attention_size, bias=False)  # W_q
        self.key_proj = nn.Linear(key_size, attention_size, bias=False)  # W_k
        self.v = nn.Parameter(torch.empty(attention_size).uniform_(-0.1, 0.1))

    def forward(self, query, keys, values, mask):
        """query (N, Hq), keys (N, S, Hk), values (N, S, Hv), mask (N, S) -> (c (N, Hv), a (N, S))."""
        scores = torch.tanh(self.query_proj(query)[:, None] + self.key_proj(keys)) @ self.v
        weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)  # (N, S)
        context = torch.bmm(weights[:, None], values)[:, 0]  # (N, 1, S) @ (N, S, Hv) -> (N, Hv)
        return context, weights


course.check_attention(BahdanauAttention)

torch.manual_seed(0)  # the same data; 300 steps instead of 500 are plenty here
attentive = train_seq2seq(
    Seq2Seq(len(source_vocab), len(target_vocab), attention=BahdanauAttention(64, 128, 64)),
    train_pairs, steps=300)
print(f"with attention: exact match {exact_match(attentive, valid_pairs):.3f} "
      f"(without: {exact_match(plain, valid_pairs):.3f})")

# %% [markdown]
# The attention weights of each output character over the source characters: the year digits
# read the year, the month digits the month's name or number, the day digits the day.

# %%
def attention_map(model, source, max_length=12):
    src, lengths, _ = batch_of([(source, "")], source_vocab, target_vocab)
    with torch.no_grad():
        memory = model.encode(src, lengths)
        state, prev, tokens, rows = model.init_state(memory), torch.tensor([BOS]), [], []
        for _ in range(max_length):
            log_probs, state, weights = model.step(prev, state, memory)
            prev = log_probs.argmax(-1)
            if int(prev) == EOS:
                break
            tokens.append(int(prev))
            rows.append(weights[0])
    return target_vocab.decode(tokens), torch.stack(rows)  # (T, S)


figure, axes = plt.subplots(1, 2, figsize=(12, 3.6))
for axis, source in zip(axes, ["the 3rd of March, 1998", "Tue 14 Nov 2023"]):
    output, weights = attention_map(attentive, source)
    axis.imshow(weights.numpy(), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    axis.set_xticks(range(len(source)), list(source), fontsize=8)
    axis.set_yticks(range(len(output)), list(output), fontsize=8)
    axis.set_title(f"{source!r} -> {output!r}", fontsize=9)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 6. Beam search
#
# Greedy commits to each token. Beam search keeps the K most likely partial outputs
# (hypotheses) at every step: extend each by every token, score = summed log-probability, keep
# the best K; a hypothesis that writes <eos> is finished and set aside. Stop when no live
# hypothesis is left or after `max_length` steps, and return the best one (finished or not).
# Write it for one sentence: keep for each hypothesis its tokens, score and decoder state.

# %%
def beam(model, src, src_lengths, bos_id, eos_id, beam_size, max_length):
    """One sentence: src (1, S) -> the best token list (without <bos> / <eos>)."""
    memory = model.encode(src, src_lengths)
    live, finished = [([], 0.0, model.init_state(memory))], []
    for _ in range(max_length):
        candidates = []
        for tokens, score, state in live:
            prev = torch.tensor([tokens[-1] if tokens else bos_id])
            log_probs, new_state, _ = model.step(prev, state, memory)
            top = log_probs[0].topk(beam_size)
            for value, token in zip(top.values.tolist(), top.indices.tolist()):
                candidates.append((tokens + [token], score + value, new_state))
        candidates.sort(key=lambda hypothesis: -hypothesis[1])
        live = []
        for tokens, score, state in candidates[:beam_size]:
            (finished if tokens[-1] == eos_id else live).append((tokens, score, state))
        if not live:
            break
    best = max(finished + live, key=lambda hypothesis: hypothesis[1])[0]
    return best[:-1] if best[-1] == eos_id else best


course.check_beam_search(beam)


def beam_translate(model, pairs, beam_size=3, max_length=12, joiner=""):
    outputs = []
    for source, target in pairs:
        src, lengths, _ = batch_of([(source, target)], source_vocab, target_vocab)
        with torch.no_grad():
            tokens = beam(model, src, lengths, BOS, EOS, beam_size, max_length)
        outputs.append(target_vocab.decode(tokens, joiner))
    return outputs


some = valid_pairs[:200]
beamed = beam_translate(plain, some)
print(f"without attention, 200 dates: exact match greedy "
      f"{sum(h == t for h, (_, t) in zip(translate(plain, some), some)) / len(some):.3f}, "
      f"beam 3 {sum(h == t for h, (_, t) in zip(beamed, some)) / len(some):.3f}")

# seqlab's batched beam search drives the same model through the step API:
src, lengths, _ = batch_of(some[:1], source_vocab, target_vocab)
(tokens, score), = beam_search(plain, src, lengths, BOS, EOS, beam_size=3, length_penalty=0.0,
                               max_length=12)[0]
print("seqlab.decode.beam_search:", repr(target_vocab.decode(tokens)), "ours:", repr(beamed[0]))

# %% [markdown]
# ## 7. BLEU
#
# BLEU (Papineni et al. 2002) is the geometric mean of the modified n-gram precisions
# (n = 1..4) of the whole test set, times a brevity penalty. Always compute it with sacrebleu,
# which fixes the tokenisation so that scores are comparable (Post 2018); seqlab's
# `seqlab.decode.bleu` calls it. On dates, sacrebleu's 13a tokenizer splits "1998-03-03" into
# "1998 - 03 - 03".

# %%
references = [t for _, t in valid_pairs]
for name, model in [("without attention", plain), ("with attention", attentive)]:
    hypotheses = translate(model, valid_pairs)
    print(f"{name:18s} BLEU {sacrebleu.corpus_bleu(hypotheses, [references]).score:5.1f}")

# %% [markdown]
# ## 8. A slice of Multi30k (German → English)
#
# The same model, your attention and your decoders, on real captions (Elliott et al. 2016),
# word by word. A few thousand pairs and a minute of training on a CPU give a low BLEU: the
# point is the whole pipeline on real text. (Skipped, with a message, when
# `../shared/data/multi30k` is absent.)

# %%
multi30k = course.shared_data("multi30k")
if multi30k is None:
    print("../shared/data/multi30k is absent: skipping the Multi30k slice")
else:
    def read_lines(name):
        with gzip.open(multi30k / name, "rt", encoding="utf-8") as file:
            return [line.lower().split() for line in file]

    german, english = read_lines("train.de.gz"), read_lines("train.en.gz")
    slice_pairs = [(d, e) for d, e in zip(german, english) if len(d) <= 15 and len(e) <= 15][:6000]
    test_pairs = [(d, e) for d, e in zip(read_lines("val.de.gz"), read_lines("val.en.gz"))][:200]
    # Words seen once become <unk>. The helpers above read these two names.
    source_vocab = Vocabulary((d for d, _ in slice_pairs), min_count=2)
    target_vocab = Vocabulary((e for _, e in slice_pairs), min_count=2)
    print(f"{len(slice_pairs)} training pairs, vocabularies {len(source_vocab)} / "
          f"{len(target_vocab)} words")
    torch.manual_seed(0)
    translator = train_seq2seq(
        Seq2Seq(len(source_vocab), len(target_vocab), embedding_dim=64, hidden_size=64,
                attention=BahdanauAttention(64, 128, 64)),
        slice_pairs, steps=400, batch_size=32, log_every=200)
    hypotheses = translate(translator, test_pairs, max_length=20, joiner=" ")
    references = [" ".join(e) for _, e in test_pairs]
    for (d, _), h, r in list(zip(test_pairs, hypotheses, references))[:3]:
        print(f"{' '.join(d)}\n  -> {h}\n  (reference: {r})")
    print(f"BLEU on 200 validation sentences: "
          f"{sacrebleu.corpus_bleu(hypotheses, [references]).score:.1f}")
print(f"notebook ran in {time.time() - started:.0f} s "
      f"({time.process_time() - started_cpu:.0f} s of CPU time)")
