"""Direct Preference Optimisation (Rafailov et al., 2023) of a chat model on preference pairs.

Each line of ``data.train`` is ``{"prompt", "chosen", "rejected"}`` (TRL's format). Both answers
are written after the prompt with the chat template, and the loss of
:func:`seqlab.align.dpo_loss` compares how much more the policy than the reference prefers the
chosen answer:

.. math::
    \\mathcal{L} = -\\log\\sigma\\big(\\beta\\,[(\\log\\pi(y_w|x) - \\log\\pi_{ref}(y_w|x))
                                   - (\\log\\pi(y_l|x) - \\log\\pi_{ref}(y_l|x))]\\big)

with the log-probabilities summed over the answer tokens only (their end-of-turn included),
β = ``objective.beta`` (0.1). The policy starts from ``model.init_from`` (an `sft` run). The
reference is the starting model: a frozen copy, whose weights are kept in the run directory
(``reference.safetensors``) so that a resumed run compares against the same model; or, when the
model is tuned with LoRA or another adapter method, the model itself with its adapters switched
off (:func:`seqlab.tune.disable_adapters`), which needs no second copy. The reference's
log-probabilities of each pair are computed once and reused in later epochs.

Dropout is switched off, as in TRL. A training step owns two models; it reads as the equation: policy log-probs, reference log-probs,
loss. Metrics (as TRL names them): ``rewards/chosen`` and ``rewards/rejected`` (the implicit
rewards β·(log π − log π_ref)), ``rewards/accuracies`` (share of pairs with the chosen reward
higher), ``rewards/margins`` (their mean difference), ``logps/chosen``, ``logps/rejected``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field

from seqlab.schema import ConfigError, StrictModel
from seqlab.tasks import register_task
from seqlab.tasks.base import (
    StepOutput,
    eval_batches,
    example_batches,
    mean_metrics,
    require_path,
    split_off,
    spread,
    to_device,
)
from seqlab.tasks.sft import ChatData, ChatModelTask, pad_rows

__all__ = ["DPOTask", "encode_pairs"]

REFERENCE_FILE = "reference.safetensors"


class DPOObjective(StrictModel):
    beta: float = Field(0.1, gt=0)
    # auto: the adapters switched off when the model is tuned with adapters, else a frozen copy.
    reference: Literal["auto", "copy", "adapters"] = "auto"


def encode_pairs(template, pairs, max_length: int, source: str, numbers=None
                 ) -> list[tuple[list[int], list[int], list[int]]]:
    """(prompt ids, chosen ids, rejected ids) per pair; answers cut to fit ``max_length`` + 1
    tokens with their prompt; a prompt that leaves no room for an answer is a DataError naming
    the pair's number in ``source`` (``numbers``, 1-based; by default the position)."""
    from seqlab.data.readers import DataError

    encoded = []
    numbers = numbers or range(1, len(pairs) + 1)
    for number, pair in zip(numbers, pairs):
        prompt, chosen = template.prompt_and_completion(pair.prompt, pair.chosen)
        rejected = template.prompt_and_completion(pair.prompt, pair.rejected)[1]
        room = max_length + 1 - len(prompt)
        if room < 1:
            raise DataError(
                f"{source}: pair {number} has a prompt of {len(prompt)} tokens, longer than the "
                f"context data.max_length={max_length}; shorten it or raise data.max_length"
            )
        encoded.append((prompt, chosen[:room], rejected[:room]))
    return encoded


class PairTask(ChatModelTask):
    """Reading and batching preference pairs; a batch holds every chosen row, then every
    rejected row."""

    DataConfig = ChatData

    def prepare(self, fit_vocab: bool = True) -> None:
        from seqlab.align.data import read_pairs

        data = self.data
        path = require_path(data.train, "data.train", self.recipe,
                            'preference pairs ({"prompt", "chosen", "rejected"} JSONL)')
        train = read_pairs(path)
        if data.valid:
            valid = read_pairs(data.valid)
            sources = {"train": (path, None), "valid": (data.valid, None)}
        else:
            kept, held = split_off(list(range(len(train))), data.valid_fraction, self.seed)
            train, valid = [train[i] for i in kept], [train[i] for i in held]
            sources = {"train": (path, [i + 1 for i in kept]), "valid": (path, [i + 1 for i in held])}
        if data.system:
            for pair in train + valid:
                if pair.prompt[0]["role"] != "system":
                    pair.prompt.insert(0, {"role": "system", "content": data.system})
        self.pairs = {"train": train, "valid": valid}
        if fit_vocab:
            self._fit_tokenizer([m["content"] for p in train for m in p.prompt]
                                + [p.chosen for p in train] + [p.rejected for p in train])
        self.examples = {split: encode_pairs(self.template, pairs, data.max_length, *sources[split])
                         for split, pairs in self.pairs.items()}

    def splits(self):
        return ["valid"] if self.examples.get("valid") else []

    def _lengths(self, split):
        return [len(p) + max(len(c), len(r)) for p, c, r in self.examples[split]]

    def train_batches(self, epoch, batch_size, rank=0, world_size=1):
        return example_batches(self._lengths("train"), batch_size, self.seed, epoch, rank, world_size)

    def _collate(self, split: str, indices: list[int]) -> dict[str, torch.Tensor]:
        """inputs (2N, L), labels (2N, L) = the next tokens, mask (2N, L) true on answer tokens,
        lengths (2N,) tokens per row; rows 0..N-1 chosen, N..2N-1 rejected."""
        rows, masks = [], []
        for answer in (1, 2):
            for index in indices:
                prompt, completion = self.examples[split][index][0], self.examples[split][index][answer]
                rows.append(prompt + completion)
                masks.append([False] * len(prompt) + [True] * len(completion))
        ids = pad_rows(rows, self.tokenizer.pad_id)  # (2N, L + 1)
        mask = pad_rows([[int(m) for m in row] for row in masks], 0).bool()
        return {"inputs": ids[:, :-1], "labels": ids[:, 1:], "mask": mask[:, 1:],
                "lengths": torch.tensor([len(row) for row in rows]),
                "index": torch.tensor(indices)}

    def collate(self, key):
        return self._collate("train", key)


@register_task
class DPOTask(PairTask):
    name = "dpo"
    summary = "direct preference optimisation on {prompt, chosen, rejected} JSONL (model.init_from=SFT_RUN)"
    ObjectiveConfig = DPOObjective
    unit = "pair"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.policy = None  # the model being trained, as build_model made it
        self.reference = None
        self.reference_path: Path | None = None
        # (split, pair index) -> (log pi_ref(y_w | x), log pi_ref(y_l | x))
        self.reference_logps: dict[tuple[str, int], tuple[float, float]] = {}

    def build_model(self):
        # Dropout off (as TRL does): the policy's log-probabilities must equal the reference's
        # at the start (loss log 2, PPO's ratio 1), and they are compared sample by sample.
        family = self.model_config.family
        getattr(self.model_config, family).dropout = 0.0
        self.policy = super().build_model()
        return self.policy

    def save_artifacts(self, run_dir):
        super().save_artifacts(run_dir)
        # Called once the starting weights are in place (model.init_from): they are the reference.
        from safetensors.torch import save_model

        self.reference_path = Path(run_dir) / REFERENCE_FILE
        if self.policy is not None and self._reference_kind(self.policy) == "copy":
            save_model(self.policy, str(self.reference_path))

    def load_artifacts(self, run_dir):
        super().load_artifacts(run_dir)
        self.reference_path = Path(run_dir) / REFERENCE_FILE

    def _reference_kind(self, model) -> str:
        from seqlab.tune import tuning_of

        tuning = tuning_of(model)
        adapters = tuning is not None and tuning.get("method") not in (None, "full")
        kind = self.objective.reference
        if kind == "adapters" and not adapters:
            raise ConfigError("objective.reference=adapters needs a model tuned with adapters "
                              "(LoRA, ...); use objective.reference=copy for full fine-tuning")
        if kind == "auto":
            kind = "adapters" if adapters else "copy"
        return kind

    def _reference_model(self, model):
        """The frozen copy, read once from the run directory."""
        if self.reference is None:
            from safetensors.torch import load_model

            if self.reference_path is None or not self.reference_path.is_file():
                where = self.reference_path or f"the run directory's {REFERENCE_FILE}"
                raise ConfigError(f"the DPO reference weights {where} are missing; they are written "
                                  f"when the run starts, so copy the whole run directory or start "
                                  f"the run again (model.init_from=SFT_RUN)")
            reference = copy.deepcopy(model)
            load_model(reference, str(self.reference_path))
            self.reference = reference.requires_grad_(False).eval()
        return self.reference

    @torch.no_grad()
    def _reference_logps(self, model, split: str, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """log π_ref of the chosen (N,) and rejected (N,) answers, each pair computed once."""
        from seqlab.align import sequence_logps
        from seqlab.tune import disable_adapters

        indices = batch["index"].tolist()
        missing = [i for i in indices if (split, i) not in self.reference_logps]
        if missing:
            model = getattr(model, "module", model)  # under DDP, the reference reads the plain model
            if self._reference_kind(model) == "adapters":
                was_training = model.training
                model.eval()
                with disable_adapters(model):
                    logits = model(batch["inputs"]).logits
                model.train(was_training)
            else:
                reference = self._reference_model(model).to(batch["inputs"].device)
                logits = reference(batch["inputs"]).logits
            logps = sequence_logps(logits, batch["labels"], batch["mask"]).tolist()  # (2N,)
            n = len(indices)
            for row, index in enumerate(indices):
                self.reference_logps[(split, index)] = (logps[row], logps[n + row])
        values = torch.tensor([self.reference_logps[(split, i)] for i in indices],
                              device=batch["inputs"].device)  # (N, 2)
        return values[:, 0], values[:, 1]

    def _losses(self, model, split, batch):
        from seqlab.align import dpo_loss, sequence_logps

        n = batch["index"].numel()
        logits = model(batch["inputs"]).logits  # (2N, L, V)
        logps = sequence_logps(logits, batch["labels"], batch["mask"])  # (2N,)
        reference_chosen, reference_rejected = self._reference_logps(model, split, batch)
        losses, chosen_rewards, rejected_rewards = dpo_loss(
            logps[:n], logps[n:], reference_chosen, reference_rejected, beta=self.objective.beta)
        return losses, chosen_rewards, rejected_rewards, logps[:n].detach(), logps[n:].detach()

    def training_step(self, model, batch, carry):
        losses = self._losses(model, "train", batch)[0]
        return StepOutput(losses.mean(), int(batch["index"].numel()))

    @torch.no_grad()
    def evaluate(self, model, split, batch_size, device, max_batches=None):
        model.eval()
        names = ["loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies",
                 "rewards/margins", "logps/chosen", "logps/rejected"]
        totals = dict.fromkeys(names, 0.0)
        count = 0
        for indices in spread(eval_batches(self._lengths(split), batch_size), max_batches):
            batch = to_device(self._collate(split, indices), device)
            losses, chosen, rejected, logps_chosen, logps_rejected = self._losses(model, split, batch)
            values = [losses, chosen, rejected, (chosen > rejected).float(), chosen - rejected,
                      logps_chosen, logps_rejected]
            for name, value in zip(names, values):
                totals[name] += float(value.sum())
            count += len(indices)
        return mean_metrics(totals, count)

    def sample_prompts(self):
        return [pair.prompt for pair in self.pairs.get("valid", [])]
