"""Image captioning (one-to-many): an image in, a sentence out.

Data path: images (N, P, P, 3) uint8 + captions -> word tokenizer -> one training example per
(image, caption) pair, the caption framed as <bos> ... <eos> (N, T) -> Captioner (CNN +
recurrent decoder, attention over image regions) -> per-token cross-entropy. Evaluation adds
decoding (greedy, or beam search with `predict.eval_beam_size` > 1), one caption per image,
scored against all of that image's captions: BLEU (sacrebleu, 13a) and exact match.
`seqlab predict RUN IMAGE.png ...` captions image files (beam search, `predict.beam_size`).

`data.corpus` picks the images: `shapes`, generated coloured shapes with their captions
(:func:`seqlab.data.images.coloured_shapes`, runs out of the box), or `files`, captions files
``filename<TAB>caption`` (`data.train`, optional `data.valid` / `data.test`) with the images in
`data.image_dir` or next to each captions file (:func:`seqlab.data.images.read_image_captions`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from seqlab.data.images import ImageCaptions
from seqlab.schema import StrictModel
from seqlab.tasks import register_task
from seqlab.tasks.base import (
    RecurrentModelConfig,
    StepOutput,
    Task,
    eval_batches,
    example_batches,
    require_path,
    split_off,
    spread,
    target_nll,
    to_device,
)

__all__ = ["CaptionTask", "images_to_tensor"]


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 images (N, P, P, 3) -> float (N, 3, P, P) in [0, 1], as the Captioner takes them."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0


class CaptionData(StrictModel):
    corpus: Literal["shapes", "files"] = "shapes"
    train: str | None = None
    valid: str | None = None
    test: str | None = None
    image_dir: str | None = None
    valid_fraction: float = Field(0.05, gt=0, lt=1)
    image_size: int = Field(32, ge=16)
    # Generated shapes: sizes and how many shapes an image may hold.
    train_size: int = Field(6000, ge=1)
    valid_size: int = Field(300, ge=1)
    test_size: int = Field(300, ge=1)
    max_shapes: int = Field(2, ge=1, le=2)
    lowercase: bool = False
    min_frequency: int = Field(1, ge=1)
    max_vocab: int | None = Field(None, ge=1)


class CaptionModel(RecurrentModelConfig):
    cell: Literal["rnn", "lstm", "gru", "mingru", "minlstm"] = "gru"
    hidden_size: int = Field(128, ge=1)
    embedding_dim: int = Field(64, ge=1)
    channels: list[int] = Field(default_factory=lambda: [32, 64, 64], min_length=1)
    attention: Literal["none", "bahdanau", "dot", "general"] = "bahdanau"
    attention_size: int | None = Field(None, ge=1)
    input_feeding: bool = False
    label_smoothing: float = Field(0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _check_image_options(self):
        if self.bidirectional:
            raise ValueError("model.bidirectional=true does not apply to a caption decoder")
        if any(width < 1 for width in self.channels):
            raise ValueError(f"model.channels should hold positive sizes, got {self.channels}")
        return self


class CaptionPredict(StrictModel):
    beam_size: int = Field(3, ge=1)
    length_penalty: float = Field(1.0, ge=0)
    max_length: int = Field(30, ge=1)
    eval_beam_size: int = Field(1, ge=1)
    num_examples: int = Field(5, ge=0)


@register_task
class CaptionTask(Task):
    name = "caption"
    summary = "image captioning: CNN encoder + recurrent decoder with attention over regions"
    DataConfig = CaptionData
    ModelConfig = CaptionModel
    PredictConfig = CaptionPredict
    metric = "loss"
    mode = "min"
    unit = "tok"

    tokenizer = None

    def _read_splits(self) -> dict:
        """The ImageCaptions of each split: generated, or read from the captions files."""
        from seqlab.data.images import coloured_shapes, read_image_captions

        data = self.data
        if data.corpus == "shapes":

            def generate(size: int, seed: int) -> ImageCaptions:
                return coloured_shapes(
                    size, image_size=data.image_size, max_shapes=data.max_shapes, seed=seed
                )

            return {
                "train": generate(data.train_size, self.seed),
                "valid": generate(data.valid_size, self.seed + 1),
                "test": generate(data.test_size, self.seed + 2),
            }

        def read(path: str) -> ImageCaptions:
            return read_image_captions(path, data.image_dir, data.image_size)

        what = "a captions file (TSV filename<TAB>caption, images next to it or in data.image_dir)"
        train = read(require_path(data.train, "data.train", self.recipe, what))
        splits = {}
        if data.valid:
            splits["train"], splits["valid"] = train, read(data.valid)
        else:
            kept, held = split_off(list(range(len(train))), data.valid_fraction, self.seed)
            splits["train"], splits["valid"] = (_subset(train, kept), _subset(train, held))
        if data.test:
            splits["test"] = read(data.test)
        return splits

    def _inputs(self, item: ImageCaptions) -> torch.Tensor:
        """What the model reads of one split's pictures: (N, 3, P, P) floats in [0, 1]."""
        return images_to_tensor(item.images)

    def prepare(self, fit_vocab: bool = True) -> None:
        from seqlab.data.tokenizers import Tokenizer

        data = self.data
        splits = self._read_splits()
        if fit_vocab:
            texts = (caption for captions in splits["train"].captions for caption in captions)
            self.tokenizer = self.fit_tokenizer(lambda: Tokenizer.train(
                texts,
                kind="word",
                lowercase=data.lowercase,
                min_frequency=data.min_frequency,
                max_size=data.max_vocab,
            ))
        self.images = {split: self._inputs(item) for split, item in splits.items()}
        self.references = {}
        for split, item in splits.items():
            refs = [[c.lower() for c in caps] if data.lowercase else caps for caps in item.captions]
            self.references[split] = refs
        # One example per (image, caption) pair: (image index, caption ids with BOS and EOS).
        self.examples = {
            split: [
                (index, self.tokenizer.encode(caption, add_bos=True, add_eos=True))
                for index, captions in enumerate(item.captions)
                for caption in captions
            ]
            for split, item in splits.items()
        }

    def splits(self) -> list[str]:
        return [s for s in ("valid", "test") if self.examples.get(s)]

    def save_artifacts(self, run_dir: Path) -> None:
        self.tokenizer.save(run_dir / "tokenizer.json")

    def load_artifacts(self, run_dir: Path) -> None:
        from seqlab.data.tokenizers import Tokenizer

        self.tokenizer = Tokenizer.load(run_dir / "tokenizer.json")

    def build_model(self) -> torch.nn.Module:
        from seqlab.models import Captioner

        m = self.model_config
        options = m.cell_options()  # cell, sizes, dropout and the cell's variant options
        return Captioner(
            self.tokenizer.vocab_size,
            image_size=self.data.image_size,
            channels=tuple(m.channels),
            embedding_dim=m.embedding_dim,
            attention=m.attention,
            attention_size=m.attention_size,
            input_feeding=m.input_feeding,
            label_smoothing=m.label_smoothing,
            pad_id=self.tokenizer.pad_id,
            **options,
        )

    def train_batches(self, epoch, batch_size, rank=0, world_size=1):
        lengths = [len(caption) for _, caption in self.examples["train"]]
        return example_batches(lengths, batch_size, self.seed, epoch, rank, world_size)

    def _collate(self, split: str, examples) -> dict[str, torch.Tensor]:
        from seqlab.data.batching import pad_sequences

        index = torch.tensor([image for image, _ in examples], dtype=torch.long)
        tgt, _ = pad_sequences(
            [caption for _, caption in examples], pad_value=self.tokenizer.pad_id
        )
        return {"images": self.images[split][index], "tgt": tgt}

    def collate(self, key):
        return self._collate("train", [self.examples["train"][i] for i in key])

    def training_step(self, model, batch, carry):
        out = model(batch["images"], batch["tgt"])
        tokens = int((batch["tgt"][:, 1:] != self.tokenizer.pad_id).sum())
        return StepOutput(out.loss, tokens)

    def _decode(self, model, images: torch.Tensor, beam_size: int) -> list[str]:
        """Captions of images (N, 3, P, P): greedy for beam_size 1, else beam search."""
        from seqlab.decode import best_outputs

        p, t = self.predict_config, self.tokenizer
        # The decoders size their length caps from source lengths; an image has none, so every
        # image gets `max_length` steps and the lengths are placeholders.
        lengths = torch.ones(images.size(0), dtype=torch.long, device=images.device)
        return [t.decode(tokens) for tokens in best_outputs(
            model, images, lengths, t.bos_id, t.eos_id, beam_size=beam_size,
            length_penalty=p.length_penalty, max_length=p.max_length)]

    @torch.no_grad()
    def evaluate(self, model, split, batch_size, device, max_batches=None):
        from seqlab.decode import bleu, exact_match

        model.eval()
        examples = self.examples[split]
        total_loss, total_tokens = 0.0, 0
        for key in spread(eval_batches([len(caption) for _, caption in examples], batch_size), max_batches):
            batch = to_device(self._collate(split, [examples[i] for i in key]), device)
            out = model(batch["images"], batch["tgt"])
            nll, tokens = target_nll(out.logits, batch["tgt"], self.tokenizer.pad_id)
            total_loss += nll
            total_tokens += tokens
        images = self.images[split]
        hypotheses: list[str] = []
        references: list[list[str]] = []
        for start in spread(range(0, images.size(0), batch_size), max_batches):
            chunk = images[start : start + batch_size].to(device)
            hypotheses += self._decode(model, chunk, self.predict_config.eval_beam_size)
            references += self.references[split][start : start + batch_size]
        loss = total_loss / max(total_tokens, 1)
        references = _equal_counts(references)
        return {
            "loss": loss,
            "perplexity": math.exp(min(loss, 50.0)),
            "bleu": bleu(hypotheses, references),
            "exact_match": exact_match(hypotheses, references),
        }

    def predict(self, model, inputs, device):
        """Each input is the path of an image file (PNG, JPEG, ...); one caption per image."""
        from seqlab.data.images import load_image

        model.eval()
        if not inputs:
            return []
        size = self.data.image_size
        arrays = np.stack(
            [load_image(path.strip(), size, where=f"input {n}") for n, path in enumerate(inputs, 1)]
        )  # (N, P, P, 3)
        return self._decode(
            model, images_to_tensor(arrays).to(device), self.predict_config.beam_size
        )

    def report(self, model, device):
        count = self.predict_config.num_examples
        split = "test" if self.examples.get("test") else "valid"
        images = self.images[split][:count]
        if not count or images.size(0) == 0:
            return []
        outputs = self._decode(model, images.to(device), self.predict_config.beam_size)
        lines = [f"{len(outputs)} {split} images (beam size {self.predict_config.beam_size}):"]
        for output, references in zip(outputs, self.references[split]):
            mark = "ok" if output.strip() in {r.strip() for r in references} else "  "
            lines.append(f"{mark} {output}    (reference: {references[0]})")
        return lines


def _subset(item: ImageCaptions, indices: list[int]) -> ImageCaptions:
    """The images and captions at `indices`."""
    return ImageCaptions(
        images=item.images[indices],
        captions=[item.captions[i] for i in indices],
        names=[item.names[i] for i in indices],
    )


def _equal_counts(references: list[list[str]]) -> list[list[str]]:
    """Pad each image's references to the same count by repeating its last one.

    The scorers want as many references for every hypothesis; a repeated reference changes
    neither BLEU (clipped n-gram counts take the max over references, the brevity penalty the
    closest length) nor exact match.
    """
    most = max(len(refs) for refs in references)
    return [refs + [refs[-1]] * (most - len(refs)) for refs in references]
