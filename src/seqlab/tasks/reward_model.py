"""A reward model trained on preference pairs with the Bradley–Terry loss.

Each line of ``data.train`` is ``{"prompt", "chosen", "rejected"}`` (TRL's format). The model
(:class:`seqlab.models.RewardModel`) reads prompt + answer, written with the chat template, and
puts a scalar head on the backbone's last-token state; the backbone is any seqlab causal
language model (``model.family``), usually the `sft` run the policy starts from
(``model.init_from=SFT_RUN``), so that both read text with the same tokenizer. The loss is

.. math:: \\mathcal{L} = -\\log\\sigma(r(x, y_w) - r(x, y_l))

(:func:`seqlab.align.bradley_terry_loss`). Metrics: loss, ``accuracy`` (share of pairs with
:math:`r_w > r_l`), ``margin`` (mean :math:`r_w - r_l`), and the mean rewards of each side.
`seqlab predict RUN "PROMPT<TAB>ANSWER"` prints the reward of each line.
"""

from __future__ import annotations

import torch

from seqlab.tasks import register_task
from seqlab.tasks.base import StepOutput, eval_batches, mean_metrics, spread, to_device
from seqlab.tasks.dpo import PairTask
from seqlab.tasks.sft import build_language_model, pad_rows

__all__ = ["RewardModelTask"]


@register_task
class RewardModelTask(PairTask):
    name = "reward-model"
    summary = "Bradley–Terry reward model on {prompt, chosen, rejected} JSONL (scalar head on an LM)"
    head_modules = ("score",)
    chats = False
    unit = "pair"

    def build_model(self):
        from seqlab.models import RewardModel

        backbone = build_language_model(self.model_config, self.tokenizer.vocab_size, self.data.max_length)
        return RewardModel(backbone)

    def _rewards(self, model, batch) -> tuple[torch.Tensor, torch.Tensor]:
        n = batch["index"].numel()
        # The full sequences (prompt + answer): inputs plus the last label.
        ids = torch.cat([batch["inputs"], batch["labels"][:, -1:]], dim=1)  # (2N, L + 1)
        rewards = model(ids, lengths=batch["lengths"]).rewards  # (2N,)
        return rewards[:n], rewards[n:]

    def training_step(self, model, batch, carry):
        from seqlab.align import bradley_terry_loss

        chosen, rejected = self._rewards(model, batch)
        return StepOutput(bradley_terry_loss(chosen, rejected).mean(), int(batch["index"].numel()))

    @torch.no_grad()
    def evaluate(self, model, split, batch_size, device, max_batches=None):
        from seqlab.align import bradley_terry_loss

        model.eval()
        totals = dict.fromkeys(["loss", "accuracy", "margin", "reward/chosen", "reward/rejected"], 0.0)
        count = 0
        for indices in spread(eval_batches(self._lengths(split), batch_size), max_batches):
            batch = to_device(self._collate(split, indices), device)
            chosen, rejected = self._rewards(model, batch)
            for name, value in [("loss", bradley_terry_loss(chosen, rejected)),
                                ("accuracy", (chosen > rejected).float()), ("margin", chosen - rejected),
                                ("reward/chosen", chosen), ("reward/rejected", rejected)]:
                totals[name] += float(value.sum())
            count += len(indices)
        return mean_metrics(totals, count)

    def score(self, model, prompts: list[list[dict]], answers: list[str], device) -> list[float]:
        """The reward of each answer to its prompt."""
        rows = []
        for prompt, answer in zip(prompts, answers):
            head, body = self.template.prompt_and_completion(prompt, answer)
            rows.append((head + body)[: self.data.max_length + 1])
        ids = pad_rows(rows, self.tokenizer.pad_id).to(device)
        lengths = torch.tensor([len(row) for row in rows], device=device)
        return model(ids, lengths=lengths).rewards.tolist()

    @torch.no_grad()
    def predict(self, model, inputs, device):
        """One reward per line ``PROMPT<TAB>ANSWER``."""
        model.eval()
        prompts, answers = [], []
        for line in inputs:
            prompt, tab, answer = line.partition("\t")
            if not tab:
                raise ValueError(f"reward-model input {line!r:.60} should be PROMPT<TAB>ANSWER")
            prompts.append(self._conversation(prompt))
            answers.append(answer)
        return [f"{value:.4f}" for value in self.score(model, prompts, answers, device)]

    def report(self, model, device):
        return []
