"""Beam search for any encoder-decoder that exposes the step API, batched over sentences and beams.

Each sentence keeps the K highest-scoring partial hypotheses (score = summed log-probability):

    candidates_t = { (y_<t, y) : y_<t in beam_{t-1}, y in vocabulary },
    score(y_<t, y) = score(y_<t) + log p(y | y_<t, x)
    beam_t = the K best candidates

When a hypothesis ends with EOS it is set aside as finished and its sentence's beam shrinks by
one (the "shrinking beam" of Bahdanau et al.'s and Sutskever et al.'s decoders): a sentence keeps
K - (number finished) live hypotheses, and its search stops when all of its beams have ended or
its length cap is reached (then the live hypotheses are kept as they are, without EOS). Every
sentence ends with up to K finished hypotheses, ranked by the length-normalised score

    score(Y) / lp(Y),   lp(Y) = ((5 + |Y|) / 6) ** length_penalty

the GNMT length penalty of Wu et al. (2016), |Y| counting the decoded tokens with EOS.
``length_penalty=0`` ranks by the raw log-probability; larger values favour longer outputs.

All live hypotheses of all unfinished sentences go through one ``model.step`` call per time
step, a batch of (sentences x K) rows; sentences that are done leave the batch.

Shapes: N sentences, K beam size, B sentences still searching, V target vocabulary.
"""

from __future__ import annotations

import torch

from seqlab.decode.greedy import StepModel, greedy_decode, max_output_lengths

__all__ = ["beam_search", "gnmt_length_penalty"]


def gnmt_length_penalty(length: int, alpha: float) -> float:
    """lp(Y) = ((5 + |Y|) / 6) ** alpha (Wu et al. 2016, eq. 14)."""
    return ((5.0 + length) / 6.0) ** alpha


@torch.no_grad()
def beam_search(
    model: StepModel,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    bos_id: int,
    eos_id: int,
    beam_size: int = 5,
    length_penalty: float = 1.0,
    max_length: int | None = None,
    max_length_ratio: float = 2.0,
    nbest: int = 1,
) -> list[list[tuple[list[int], float]]]:
    """Search the best translations of each sentence.

    Args:
        model: a :class:`~seqlab.decode.greedy.StepModel` (in eval mode, so dropout is off).
        src: (N, S) source token ids, right padded. src_lengths: (N,).
        bos_id: the token fed at the first step. eos_id: the token that ends a hypothesis.
        beam_size: K, live hypotheses per sentence.
        length_penalty: alpha of the GNMT penalty ((5 + |Y|) / 6) ** alpha used to rank finished
            hypotheses; 0 ranks by summed log-probability.
        max_length: cap on the steps (EOS included) of every sentence; None means
            ``ceil(max_length_ratio * source_length)`` per sentence.
        nbest: how many hypotheses to return per sentence (at most `beam_size`).

    Returns:
        For each sentence, its ``nbest`` best ``(tokens, score)`` pairs, best first: tokens
        without BOS and EOS, score the length-normalised log-probability. With ``beam_size=1`` and
        ``length_penalty=0`` this is exactly :func:`~seqlab.decode.greedy_decode`.
    """
    if beam_size < 1:
        raise ValueError(f"beam_size should be a positive integer, got {beam_size}")
    if not 1 <= nbest <= beam_size:
        raise ValueError(f"nbest should be in [1, beam_size={beam_size}], got {nbest}")
    if length_penalty < 0:
        raise ValueError(f"length_penalty should be >= 0, got {length_penalty}")
    device = src.device
    num_sentences, beam = src.size(0), beam_size
    caps = max_output_lengths(src_lengths, max_length, max_length_ratio).to(device)

    memory = model.encode(src, src_lengths)
    # Every sentence gets K copies of its memory: rows n*K .. n*K + K-1 are sentence n's beams.
    memory = model.reorder_memory(
        memory, torch.arange(num_sentences, device=device).repeat_interleave(beam)
    )
    state = model.init_state(memory)
    beam_ranks = torch.arange(beam, device=device)
    # At the first step all K beams hold the same prefix (BOS): only beam 0 may expand.
    scores = torch.full((num_sentences, beam), float("-inf"), device=device)  # (B, K)
    scores[:, 0] = 0.0
    history = torch.empty(num_sentences, beam, 0, dtype=torch.long, device=device)  # (B, K, t)
    prev = torch.full((num_sentences * beam,), bos_id, dtype=torch.long, device=device)
    active = list(range(num_sentences))  # original index of each sentence still searching
    finished: list[list[tuple[list[int], float, int]]] = [[] for _ in range(num_sentences)]

    for t in range(1, int(caps.max()) + 1):
        log_probs, state, _ = model.step(prev, state, memory)  # (B*K, V)
        vocab = log_probs.size(-1)
        searching = len(active)
        candidates = scores.unsqueeze(-1) + log_probs.view(searching, beam, vocab)  # (B, K, V)
        top_scores, top_index = candidates.view(searching, beam * vocab).topk(beam, dim=-1)
        # The shrinking beam: a sentence with f finished hypotheses keeps K - f live ones.
        live = torch.tensor([beam - len(finished[n]) for n in active], device=device)  # (B,)
        top_scores = top_scores.masked_fill(beam_ranks[None, :] >= live[:, None], float("-inf"))
        origin = top_index // vocab  # (B, K) which beam each candidate extends
        tokens = top_index % vocab  # (B, K)
        history = torch.cat(
            [history.gather(1, origin.unsqueeze(-1).expand(-1, -1, t - 1)), tokens.unsqueeze(-1)],
            dim=-1,
        )  # (B, K, t)

        at_cap = caps[active] <= t  # (B,)
        ended = ((tokens == eos_id) | at_cap[:, None]) & torch.isfinite(top_scores)  # (B, K)
        if bool(ended.any()):
            for row, k in ended.nonzero().tolist():
                sequence = history[row, k].tolist()
                if sequence[-1] == eos_id:
                    sequence = sequence[:-1]
                finished[active[row]].append((sequence, float(top_scores[row, k]), t))
            top_scores = top_scores.masked_fill(ended, float("-inf"))
        scores = top_scores

        # Rows of the old batch that the new beams continue from: (B, K) -> flat (B*K,).
        parents = origin + (torch.arange(searching, device=device) * beam)[:, None]
        keep = torch.isfinite(scores).any(dim=-1)  # (B,) sentences with a live beam
        if not bool(keep.all()):
            kept = keep.nonzero().squeeze(1)  # (B',)
            if kept.numel() == 0:
                break
            scores, history, tokens, parents = (x[kept] for x in (scores, history, tokens, parents))
            rows = (kept[:, None] * beam + beam_ranks[None, :]).view(-1)  # (B'*K,)
            memory = model.reorder_memory(memory, rows)
            active = [active[i] for i in kept.tolist()]
        state = model.reorder_state(state, parents.reshape(-1))
        prev = tokens.reshape(-1)  # (B*K,)

    results = []
    for hypotheses in finished:
        ranked = sorted(
            (
                (tokens, score / gnmt_length_penalty(length, length_penalty))
                for tokens, score, length in hypotheses
            ),
            key=lambda pair: pair[1],
            reverse=True,
        )
        results.append(ranked[:nbest])
    return results


def best_outputs(
    model: StepModel,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    bos_id: int,
    eos_id: int,
    beam_size: int = 1,
    length_penalty: float = 1.0,
    max_length: int | None = None,
    max_length_ratio: float = 2.0,
) -> list[list[int]]:
    """The best output tokens of each input: :func:`greedy_decode` for ``beam_size`` 1 (one
    batched step per position, no beams to keep), else the first of :func:`beam_search`'s."""
    if beam_size == 1:
        results = greedy_decode(model, src, src_lengths, bos_id, eos_id, max_length=max_length,
                                max_length_ratio=max_length_ratio)
        return [tokens for tokens, _ in results]
    results = beam_search(model, src, src_lengths, bos_id, eos_id, beam_size=beam_size,
                          length_penalty=length_penalty, max_length=max_length,
                          max_length_ratio=max_length_ratio)
    return [nbest[0][0] for nbest in results]
