"""Reinforcement learning from a reward: PPO (with a value head) and GRPO (groups, no critic).

Both start from a chat model (``model.init_from=SFT_RUN``) and read prompts from ``data.train``
(``{"prompt": ...}`` JSONL, or a text file with one prompt per line). The reward of a reply is
given by a reward-model run (``reward.from=RUN``, scored at the reply's last token)
or by a Python function (``reward.fn=MODULE:FUNCTION``, called as
``function(prompts, replies) -> list of floats``).

Each rollout batch runs inside the ordinary training loop: an epoch's batch keys are
(rollout prompts, PPO epoch, minibatch), and the first key of a rollout samples the replies with
the current policy (KV cache) and scores them; every key is then one optimiser step on one
minibatch of that rollout. The reference model is kept as in the `dpo` task (a frozen copy of
the starting weights in ``reference.safetensors``, or the model with its adapters off).

PPO (Schulman et al., 2017; Ziegler et al., 2019; Ouyang et al., 2022), per reply token t:

.. math::
    r_t = -\\beta_{KL}(\\log\\pi_{old}(y_t) - \\log\\pi_{ref}(y_t)) + [t = T]\\,s, \\quad
    (\\hat A, \\hat R) = \\mathrm{GAE}_{\\gamma,\\lambda}(r, V_{old}), \\quad
    \\mathcal{L} = \\mathcal{L}^{clip}_\\pi(\\mathrm{whiten}(\\hat A))
                 + c_V\\,\\mathcal{L}^{clip}_V(\\hat R)

GRPO (Shao et al., 2024): ``objective.group_size`` replies per prompt, the advantage of each
is its reward normalised within its group (the same for all its tokens), and the KL to the
reference is a loss term (k3 estimator) instead of a reward penalty:

.. math:: \\mathcal{L} = \\mathcal{L}^{clip}_\\pi(\\hat A) + \\beta\\,\\mathbb{E}_t[k_3]

Validation samples one reply per validation prompt (seeded) and reports ``reward`` (mean score),
``kl`` (mean summed log-ratio to the reference), ``length`` and ``distinct_2``. The training
figures of every optimiser step (reward, KL, entropy, clip fraction, approx KL, value loss) go
to ``rl.jsonl`` in the run directory. The rollout being trained on is the step's carried state,
so a checkpoint taken in the middle of a rollout holds it, and a resumed run continues with the
same samples and reaches the same metrics.
"""

from __future__ import annotations

import importlib
import itertools
import json
import random
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field

from seqlab.schema import ConfigError, StrictModel
from seqlab.tasks import register_task
from seqlab.tasks.base import StepOutput, require_path, shard_batches, split_off
from seqlab.tasks.dpo import DPOTask
from seqlab.tasks.sft import ChatData, pad_rows

__all__ = ["GRPOTask", "PPOTask", "read_prompts", "reply_batch"]


def reply_batch(sequences: list[list[int]], replies: list[list[int]], pad_id: int, device
                ) -> dict[str, torch.Tensor]:
    """Sequences (prompt + reply ids) as a batch for scoring their replies: inputs (N, L),
    labels (N, L) (the inputs shifted by one) and mask (N, L), true on the reply tokens."""
    ids = pad_rows(sequences, pad_id).to(device)  # (N, L + 1)
    mask = pad_rows([[0] * (len(s) - len(r)) + [1] * len(r) for s, r in zip(sequences, replies)], 0)
    return {"inputs": ids[:, :-1], "labels": ids[:, 1:], "mask": mask[:, 1:].bool().to(device),
            "index": torch.arange(len(sequences), device=device)}


def read_prompts(path: str) -> list[list[dict]]:
    """Prompts as conversations: ``{"prompt": ...}`` JSONL, or plain text, one per line."""
    from seqlab.align.data import _prompt
    from seqlab.data.readers import DataError, _format_of, _json_lines, numbered_lines

    path = Path(path)
    if _format_of(path) in (".jsonl", ".json"):
        prompts = [_prompt(path, line, record) for line, record in _json_lines(path)]
    else:
        prompts = [[{"role": "user", "content": text.strip()}]
                   for _, text in numbered_lines(path) if text.strip()]
    if not prompts:
        raise DataError(f"{path} holds no prompts")
    return prompts


class RLObjective(StrictModel):
    # One reward-model run, or several (an ensemble: their rewards combined by reward_combine,
    # "mean" or "min", the worst case; Coste et al. 2024 find both curb reward over-optimisation).
    reward_from: str | list[str] | None = None
    reward_fn: str | None = None
    reward_combine: Literal["mean", "min"] = "mean"
    # A bonus of diversity_coef x the share of a reply's word-piece bigrams that no other reply
    # of the rollout has (seqlab.align.ngram_novelty): the policy is paid for not repeating
    # itself or the rest of the batch, against the collapse onto a few rewarded phrases.
    diversity_coef: float = Field(0.0, ge=0)
    max_new_tokens: int = Field(32, ge=1)
    temperature: float = Field(1.0, gt=0)
    top_p: float | None = Field(None, gt=0, le=1)
    clip_range: float = Field(0.2, gt=0)
    # Optimiser steps per rollout = epochs x minibatches.
    epochs: int = Field(4, ge=1)
    num_minibatches: int = Field(1, ge=1)
    reference: Literal["auto", "copy", "adapters"] = "auto"


class PPOObjective(RLObjective):
    kl_coef: float = Field(0.05, ge=0)
    gamma: float = Field(1.0, ge=0, le=1)
    lam: float = Field(0.95, ge=0, le=1)
    clip_range_value: float = Field(0.2, gt=0)
    vf_coef: float = Field(0.1, ge=0)
    whiten_advantages: bool = True


class GRPOObjective(RLObjective):
    group_size: int = Field(4, ge=2)
    beta: float = Field(0.04, ge=0)
    epochs: int = Field(1, ge=1)


class RLTask(DPOTask):
    """Rollouts, rewards and the reference; PPO and GRPO differ in the model and the loss."""

    DataConfig = ChatData
    unit = "ep"
    metric = "reward"
    mode = "max"
    group_size = 1

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rollout = None  # (prompt indices, tensors) of the rollout being trained on
        self.reward_models = None
        self.log_path: Path | None = None

    # Data.
    def prepare(self, fit_vocab: bool = True) -> None:
        from seqlab.data.readers import DataError

        data = self.data
        path = require_path(data.train, "data.train", self.recipe, "prompts (JSONL or one per line)")
        prompts = read_prompts(path)
        if data.valid:
            valid = read_prompts(data.valid)
        else:
            prompts, valid = split_off(prompts, data.valid_fraction, self.seed)
        if data.system:
            for prompt in prompts + valid:
                if prompt[0]["role"] != "system":
                    prompt.insert(0, {"role": "system", "content": data.system})
        self.pairs = {"train": prompts, "valid": valid}  # sample_prompts reads them
        if fit_vocab:
            self._fit_tokenizer([m["content"] for p in prompts for m in p])
        room = self.objective.max_new_tokens
        self.prompt_ids = {}
        for split, conversations in self.pairs.items():
            encoded = []
            for number, conversation in enumerate(conversations, start=1):
                ids = self.template.encode(conversation, add_generation_prompt=True)[0]
                if len(ids) + room > data.max_length + 1:
                    raise DataError(
                        f"{path}: {split} prompt {number} has {len(ids)} tokens; with "
                        f"objective.max_new_tokens={room} that is longer than the context "
                        f"data.max_length={data.max_length}; shorten it or lower max_new_tokens"
                    )
                encoded.append(ids)
            self.prompt_ids[split] = encoded
        self._check_reward()

    def splits(self):
        return ["valid"] if self.prompt_ids.get("valid") else []

    def train_batches(self, epoch, batch_size, rank=0, world_size=1):
        order = list(range(len(self.prompt_ids["train"])))
        random.Random(self.seed * 1000003 + epoch).shuffle(order)
        rollouts = [tuple(order[i:i + batch_size]) for i in range(0, len(order) - batch_size + 1, batch_size)]
        rollouts = shard_batches(rollouts, rank, world_size)
        o = self.objective
        return [(rollout, ppo_epoch, minibatch) for rollout in rollouts
                for ppo_epoch in range(o.epochs) for minibatch in range(o.num_minibatches)]

    def collate(self, key):
        rollout, ppo_epoch, minibatch = key
        return {"rollout": rollout, "ppo_epoch": ppo_epoch, "minibatch": minibatch}

    def save_artifacts(self, run_dir):
        super().save_artifacts(run_dir)
        self.log_path = Path(run_dir) / "rl.jsonl"

    def load_artifacts(self, run_dir):
        super().load_artifacts(run_dir)
        self.log_path = Path(run_dir) / "rl.jsonl"

    # Rewards.
    def _check_reward(self) -> None:
        o = self.objective
        if (o.reward_from is None) == (o.reward_fn is None):
            raise ConfigError("give exactly one of reward.from=REWARD_RUN (a reward-model run) "
                              "or reward.fn=MODULE:FUNCTION")
        if o.reward_from is not None:
            from seqlab.data.tokenizers import Tokenizer

            if not self.reward_runs():
                raise ConfigError("reward.from=[] names no reward-model run")
            for run in self.reward_runs():
                tokenizer_file = Path(run) / "tokenizer.json"
                if not tokenizer_file.is_file():
                    raise ConfigError(f"reward.from={run} is not a reward-model run "
                                      f"(no tokenizer.json)")
                theirs = Tokenizer.load(tokenizer_file)
                if theirs.get_vocab() != self.tokenizer.get_vocab():
                    raise ConfigError(
                        f"reward.from={run}: the reward run's tokenizer differs from the "
                        f"policy's ({theirs.vocab_size} vs {self.tokenizer.vocab_size} tokens), so "
                        f"it would read other text than the policy writes; train the reward model "
                        f"with model.init_from=SFT_RUN, the run the policy starts from"
                    )
        else:
            self._reward_function()

    def _reward_function(self):
        spec = self.objective.reward_fn
        module_name, _, name = spec.partition(":")
        try:
            function = getattr(importlib.import_module(module_name), name)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError(f"reward.fn={spec}: cannot import it ({exc}); give MODULE:FUNCTION "
                              f"with MODULE importable") from None
        return function

    @torch.no_grad()
    def scores(self, prompts: list[list[dict]], sequences: list[list[int]], replies: list[list[int]],
               device) -> torch.Tensor:
        """(N,) the reward of each reply."""
        o = self.objective
        if o.reward_fn is not None:
            texts = [self.template.decode_reply(reply) for reply in replies]
            values = list(self._reward_function()([p[-1]["content"] for p in prompts], texts))
            if len(values) != len(texts):
                raise ValueError(f"reward.fn={o.reward_fn} returned {len(values)} rewards "
                                 f"for {len(texts)} replies; it should return one number per reply")
            return torch.tensor([float(v) for v in values], device=device)
        if self.reward_models is None:
            from seqlab.models import load

            self.reward_models = [load(run).requires_grad_(False) for run in self.reward_runs()]
        ids = pad_rows(sequences, self.tokenizer.pad_id).to(device)
        lengths = torch.tensor([len(s) for s in sequences], device=device)
        rewards = torch.stack([model.to(device)(ids, lengths=lengths).rewards
                               for model in self.reward_models])  # (K, N)
        return rewards.min(0).values if o.reward_combine == "min" else rewards.mean(0)

    def rollout_rewards(self, prompts, sequences, replies, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(N,) the rewards a rollout trains on (the score plus the diversity bonus), and (N,)
        each reply's bigram novelty within the rollout."""
        from seqlab.align import ngram_novelty

        novelty = ngram_novelty(replies, 2).to(device)
        bonus = self.objective.diversity_coef * novelty
        return self.scores(prompts, sequences, replies, device) + bonus, novelty

    def reward_runs(self) -> list[str]:
        """The reward-model runs of reward.from (one, or an ensemble)."""
        runs = self.objective.reward_from
        return [runs] if isinstance(runs, str) else list(runs or [])

    # Rollouts.
    def language_model(self, model):
        model = getattr(model, "module", model)
        return getattr(model, "language_model", model)

    @torch.no_grad()
    def sample(self, model, split: str, indices, device, generator=None):
        """Replies to the prompts (each ``group_size`` times): prompts, sequences, replies."""
        from seqlab.align import sample_replies

        o = self.objective
        policy = self.language_model(model)
        prompts, sequences, replies = [], [], []
        for index in indices:  # a prompt's group of replies is drawn as one batch
            prompt = self.prompt_ids[split][index]
            for reply in sample_replies(policy, prompt, self.tokenizer.eos_id, o.max_new_tokens,
                                        self.group_size, temperature=o.temperature, top_p=o.top_p,
                                        generator=generator, include_end=True):
                reply = reply or [self.tokenizer.eos_id]
                prompts.append(self.pairs[split][index])
                sequences.append(prompt + reply)
                replies.append(reply)
        return prompts, sequences, replies

    def _tensors(self, sequences, replies, device) -> dict[str, torch.Tensor]:
        return reply_batch(sequences, replies, self.tokenizer.pad_id, device)

    def _logps(self, model, batch):
        """(N, L) log-probabilities of the reply tokens (0 elsewhere) and the model output."""
        from seqlab.align import token_logps

        out = model(batch["inputs"])
        return token_logps(out.logits, batch["labels"], batch["mask"]), out

    @torch.no_grad()
    def _reference_token_logps(self, model, batch) -> torch.Tensor:
        from seqlab.align import token_logps
        from seqlab.tune import disable_adapters

        plain = getattr(model, "module", model)
        if self._reference_kind(plain) == "adapters":
            was_training = plain.training
            plain.eval()
            with disable_adapters(plain):
                logits = plain(batch["inputs"]).logits
            plain.train(was_training)
        else:
            logits = self._reference_model(plain).to(batch["inputs"].device)(batch["inputs"]).logits
        return token_logps(logits, batch["labels"], batch["mask"])

    def _log(self, record: dict) -> None:
        if self.log_path is not None:
            with open(self.log_path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps({k: round(float(v.detach() if torch.is_tensor(v) else v), 6)
                                         for k, v in record.items()}) + "\n")

    def training_step(self, model, batch, carry):
        rollout_key = batch["rollout"]
        if carry is not None and self.rollout is None:  # resumed in the middle of a rollout
            self.rollout = (tuple(carry["prompts"].tolist()), carry["data"])
        if self.rollout is None or self.rollout[0] != rollout_key or (
                batch["ppo_epoch"] == 0 and batch["minibatch"] == 0):
            self.rollout = (rollout_key, self.make_rollout(model, rollout_key))
        data = self.rollout[1]
        n = data["inputs"].size(0)
        size = -(-n // self.objective.num_minibatches)
        rows = slice(batch["minibatch"] * size, (batch["minibatch"] + 1) * size)
        minibatch = {name: value[rows] for name, value in data.items()}
        loss, metrics = self.loss(model, minibatch)
        novelty = data.get("novelty")  # absent in a rollout checkpointed by an older version
        self._log({"ppo_epoch": batch["ppo_epoch"], "reward": data["scores"].mean(),
                   **({} if novelty is None else {"novelty": novelty.mean()}), **metrics})
        # The rollout is carried (and checkpointed) until its last minibatch is trained on.
        carry = {"prompts": torch.tensor(rollout_key), "data": data}
        return StepOutput(loss, int(minibatch["inputs"].size(0)), carry=carry)

    @torch.no_grad()
    def evaluate(self, model, split, batch_size, device, max_batches=None):
        from seqlab.align import token_logps

        model.eval()
        generator = torch.Generator(device=device).manual_seed(self.seed)
        indices = list(range(len(self.prompt_ids[split])))
        if max_batches is not None:
            indices = indices[: max_batches * batch_size]
        group, self.group_size = self.group_size, 1
        try:
            prompts, sequences, replies = self.sample(model, split, indices, generator=generator, device=device)
        finally:
            self.group_size = group
        batch = self._tensors(sequences, replies, device)
        logps = token_logps(model(batch["inputs"]).logits, batch["labels"], batch["mask"])
        reference = self._reference_token_logps(model, batch)
        pairs = [pair for reply in replies for pair in itertools.pairwise(reply)]
        return {
            "reward": float(self.scores(prompts, sequences, replies, device).mean()),
            "kl": float((logps - reference).sum(-1).mean()),
            "length": sum(len(r) for r in replies) / len(replies),
            "distinct_2": len(set(pairs)) / max(len(pairs), 1),
        }

    def sample_prompts(self):
        return self.pairs.get("valid", [])


@register_task
class PPOTask(RLTask):
    name = "ppo"
    summary = "PPO against a reward model or function (model.init_from=SFT_RUN reward.from=RM_RUN)"
    ObjectiveConfig = PPOObjective
    head_modules = ("value",)

    def build_model(self):
        from seqlab.models import ValueHeadLM

        self.policy = ValueHeadLM(super().build_model())
        return self.policy

    @torch.no_grad()
    def make_rollout(self, model, indices):
        from seqlab.align import gae, token_rewards, whiten

        o = self.objective
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        prompts, sequences, replies = self.sample(model, "train", indices, device)
        batch = self._tensors(sequences, replies, device)
        logps, out = self._logps(model, batch)
        values = getattr(model, "module", model).values(out.hidden) * batch["mask"]  # (N, L)
        reference = self._reference_token_logps(model, batch)
        scores, novelty = self.rollout_rewards(prompts, sequences, replies, device)
        rewards = token_rewards(scores, logps, reference, batch["mask"], o.kl_coef)
        # GAE runs over the reply tokens; replies start at different positions, so each row is
        # shifted to start at 0 and shifted back.
        starts = batch["mask"].float().argmax(dim=1)
        advantages, returns = torch.zeros_like(rewards), torch.zeros_like(rewards)
        for row, start in enumerate(starts.tolist()):
            a, r = gae(rewards[row, start:], values[row, start:], o.gamma, o.lam, batch["mask"][row, start:])
            advantages[row, start:], returns[row, start:] = a, r
        if o.whiten_advantages:
            advantages = whiten(advantages, batch["mask"])
        model.train(was_training)
        return {**batch, "old_logps": logps, "old_values": values, "advantages": advantages,
                "returns": returns, "scores": scores, "novelty": novelty, "kl": (logps - reference).sum(-1)}

    def loss(self, model, batch):
        from seqlab.align import entropy_from_logits, masked_mean, ppo_policy_loss, ppo_value_loss

        o = self.objective
        logps, out = self._logps(model, batch)
        values = getattr(model, "module", model).values(out.hidden)
        policy_loss, metrics = ppo_policy_loss(logps, batch["old_logps"], batch["advantages"],
                                               batch["mask"], o.clip_range)
        value_loss, value_clip = ppo_value_loss(values, batch["old_values"], batch["returns"],
                                                batch["mask"], o.clip_range_value)
        with torch.no_grad():
            entropy = masked_mean(entropy_from_logits(out.logits), batch["mask"])
        return policy_loss + o.vf_coef * value_loss, {
            "kl": batch["kl"].mean(), "entropy": entropy, "value_loss": value_loss,
            "value_clip_fraction": value_clip, **metrics}


@register_task
class GRPOTask(RLTask):
    name = "grpo"
    summary = "GRPO: groups of replies per prompt, group-normalised advantages, no value model"
    ObjectiveConfig = GRPOObjective

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.group_size = self.objective.group_size

    @torch.no_grad()
    def make_rollout(self, model, indices):
        from seqlab.align import group_advantages

        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        prompts, sequences, replies = self.sample(model, "train", indices, device)
        batch = self._tensors(sequences, replies, device)
        logps, _ = self._logps(model, batch)
        reference = self._reference_token_logps(model, batch)
        scores, novelty = self.rollout_rewards(prompts, sequences, replies, device)
        advantages = group_advantages(scores.view(-1, self.group_size)).view(-1, 1)  # (N, 1)
        model.train(was_training)
        return {**batch, "old_logps": logps, "reference_logps": reference,
                "advantages": advantages.expand_as(logps).contiguous(), "scores": scores,
                "novelty": novelty}

    def loss(self, model, batch):
        from seqlab.align import kl_estimate, masked_mean, ppo_policy_loss

        o = self.objective
        logps, _ = self._logps(model, batch)
        policy_loss, metrics = ppo_policy_loss(logps, batch["old_logps"], batch["advantages"],
                                               batch["mask"], o.clip_range)
        kl = masked_mean(kl_estimate(logps, batch["reference_logps"], "k3"), batch["mask"])
        return policy_loss + o.beta * kl, {"kl": kl.detach(), **metrics}
