"""Causal language modelling with either model family: `model.family` picks the task.

`causal-lm` is the `lm` task (recurrent, truncated BPTT) or the `lm-transformer` task (GPT,
shuffled blocks) behind one config: `model.family` chooses, `model.recurrent.*` and
`model.transformer.*` hold each family's settings, and data, objective (next-token
cross-entropy) and predictions are those tasks' own. `seqlab train pretrain-clm` uses it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from seqlab.schema import StrictModel
from seqlab.tasks import register_task
from seqlab.tasks.base import Task
from seqlab.tasks.language_model import (
    LanguageModelData,
    LanguageModelModel,
    LanguageModelPredict,
    LanguageModelTask,
)
from seqlab.tasks.transformer import GPTModel, TransformerLMTask

__all__ = ["CausalLMTask"]


class CausalLMModel(StrictModel):
    family: Literal["transformer", "recurrent"] = "transformer"
    transformer: GPTModel = Field(default_factory=GPTModel)
    recurrent: LanguageModelModel = Field(default_factory=LanguageModelModel)


FAMILIES: dict[str, type[Task]] = {"transformer": TransformerLMTask, "recurrent": LanguageModelTask}


@register_task
class CausalLMTask(Task):
    """Delegates every step to the family's language-model task."""

    name = "causal-lm"
    summary = "next-token language model on plain text, Transformer or recurrent (model.family)"
    DataConfig = LanguageModelData
    ModelConfig = CausalLMModel
    PredictConfig = LanguageModelPredict
    unit = "tok"

    def __init__(self, data, model, predict, seed=0, recipe=None, objective=None):
        super().__init__(data, model, predict, seed=seed, recipe=recipe, objective=objective)
        family = FAMILIES[model.family]
        self.inner = family(data, getattr(model, model.family), predict, seed=seed, recipe=recipe)
        self.metric, self.mode = family.metric, family.mode

    def __getattr__(self, name):
        # Attributes the inner task sets while preparing (tokenizer, streams, ...).
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def pretrained_tokenizer(self):
        return self.inner.pretrained_tokenizer if "inner" in self.__dict__ else None

    @pretrained_tokenizer.setter
    def pretrained_tokenizer(self, tokenizer):
        if "inner" in self.__dict__:
            self.inner.pretrained_tokenizer = tokenizer

    def prepare(self, fit_vocab=True):
        self.inner.prepare(fit_vocab)

    def splits(self):
        return self.inner.splits()

    def train_batches(self, epoch, batch_size, rank=0, world_size=1):
        return self.inner.train_batches(epoch, batch_size, rank, world_size)

    def collate(self, key):
        return self.inner.collate(key)

    def save_artifacts(self, run_dir):
        self.inner.save_artifacts(run_dir)

    def load_artifacts(self, run_dir):
        self.inner.load_artifacts(run_dir)

    def build_model(self):
        return self.inner.build_model()

    def training_step(self, model, batch, carry):
        return self.inner.training_step(model, batch, carry)

    def evaluate(self, model, split, batch_size, device, max_batches=None):
        return self.inner.evaluate(model, split, batch_size, device, max_batches)

    def predict(self, model, inputs, device):
        return self.inner.predict(model, inputs, device)

    def report(self, model, device):
        return self.inner.report(model, device)
