"""Video captioning (Seq2Seq): a clip of frames in, a sentence out.

Data path: clips (T_i, P, P, 3) uint8 + captions -> word tokenizer -> one training example per
(clip, caption) pair, the caption framed as <bos> ... <eos> (N, T); clips padded to the longest
in the batch (N, F, 3, P, P) with their frame counts -> VideoCaptioner (per-frame CNN, recurrent
or Transformer encoder over time, recurrent decoder attending over the frames) -> per-token
cross-entropy. Evaluation adds decoding (greedy, or beam search with `predict.eval_beam_size`
> 1), one caption per clip, scored against all of that clip's captions: BLEU (sacrebleu, 13a),
exact match and, on generated clips, motion accuracy (the fraction of shapes whose motion words
are right; see :func:`seqlab.data.video.motions_of`). `seqlab predict RUN clip.npy frames/ ...`
captions clips (beam search, `predict.beam_size`).

The task is the image caption task (:mod:`seqlab.tasks.caption`: vocabulary, references,
examples, batches) with clips in place of images. `data.corpus` picks the clips: `shapes`,
generated moving shapes (:func:`seqlab.data.video.moving_shapes`, runs out of the box), or
`files`, captions files ``clip<TAB>caption`` (`data.train`, optional `data.valid` /
`data.test`) with the clips (``.npy`` arrays or folders of frames) in `data.clip_dir` or next
to each captions file. `data.frames` = `first` / `middle` keeps one frame of every clip, the
baseline that shows what a model learns from a still picture.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from seqlab.data.video import VideoCaptions
from seqlab.schema import StrictModel
from seqlab.tasks import register_task
from seqlab.tasks.base import (
    StepOutput,
    eval_batches,
    require_path,
    split_off,
    spread,
    target_nll,
    to_device,
)
from seqlab.tasks.caption import CaptionModel, CaptionTask, _equal_counts

__all__ = ["ClipTensors", "VideoCaptionTask", "clips_to_tensor"]


def clips_to_tensor(frames: torch.Tensor) -> torch.Tensor:
    """uint8 clips (N, F, P, P, 3) -> float (N, F, 3, P, P) in [0, 1], as VideoCaptioner reads."""
    return frames.permute(0, 1, 4, 2, 3).float() / 255.0


def _keep_frames(clip: np.ndarray, frames: str) -> np.ndarray:
    """All frames of a clip (T, P, P, 3), or only its first or middle one (1, P, P, 3)."""
    if frames == "first":
        return clip[:1]
    if frames == "middle":
        middle = (len(clip) - 1) // 2
        return clip[middle : middle + 1]
    return clip


@dataclass
class ClipTensors:
    """A split's clips, right padded: frames (N, F, P, P, 3) uint8 and lengths (N,) long.

    Kept as uint8 (a quarter of the memory of floats); :meth:`batch` converts the clips asked for.
    """

    frames: torch.Tensor
    lengths: torch.Tensor

    @classmethod
    def stack(cls, clips: list[np.ndarray]) -> ClipTensors:
        """Pad clips (T_i, P, P, 3) to the longest with black frames."""
        lengths = torch.tensor([len(clip) for clip in clips], dtype=torch.long)
        frames = torch.zeros(len(clips), int(lengths.max()), *clips[0].shape[1:], dtype=torch.uint8)
        for row, clip in enumerate(clips):
            frames[row, : len(clip)] = torch.from_numpy(np.ascontiguousarray(clip))
        return cls(frames, lengths)

    def __len__(self) -> int:
        return self.lengths.size(0)

    def batch(self, index: torch.Tensor | slice) -> tuple[torch.Tensor, torch.Tensor]:
        """Clips (n, F', 3, P, P) float, padded to the longest of them, and lengths (n,)."""
        lengths = self.lengths[index]
        frames = self.frames[index][:, : int(lengths.max())]  # (n, F', P, P, 3)
        return clips_to_tensor(frames), lengths


class VideoCaptionData(StrictModel):
    corpus: Literal["shapes", "files"] = "shapes"
    train: str | None = None
    valid: str | None = None
    test: str | None = None
    clip_dir: str | None = None
    valid_fraction: float = Field(0.05, gt=0, lt=1)
    image_size: int = Field(32, ge=16)
    frames: Literal["all", "first", "middle"] = "all"
    # Generated clips: sizes, frames per clip and how many shapes a clip may hold.
    train_size: int = Field(6000, ge=1)
    valid_size: int = Field(300, ge=1)
    test_size: int = Field(300, ge=1)
    min_frames: int = Field(8, ge=2)
    max_frames: int = Field(12, ge=2)
    max_shapes: int = Field(2, ge=1, le=2)
    lowercase: bool = False
    min_frequency: int = Field(1, ge=1)
    max_vocab: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _check_frames(self):
        if self.min_frames > self.max_frames:
            raise ValueError(
                f"data.min_frames={self.min_frames} is more than data.max_frames="
                f"{self.max_frames}; give min_frames <= max_frames"
            )
        return self


class VideoCaptionModel(CaptionModel):
    encoder: Literal["rnn", "lstm", "gru", "mingru", "minlstm", "transformer"] = "gru"
    encoder_hidden_size: int | None = Field(None, ge=1)
    encoder_layers: int = Field(1, ge=1)
    nhead: int = Field(4, ge=1)
    dim_feedforward: int | None = Field(None, ge=1)
    max_frames: int = Field(256, ge=1)
    frame_differences: bool = True
    memory: Literal["frames", "regions"] = "frames"

    @model_validator(mode="after")
    def _check_image_options(self):
        # Replaces the image captioner's check: here `bidirectional` is the encoder's.
        if any(width < 1 for width in self.channels):
            raise ValueError(f"model.channels should hold positive sizes, got {self.channels}")
        if self.encoder not in ("transformer", self.cell):
            raise ValueError(
                f"model.encoder={self.encoder} needs model.cell={self.encoder} (a recurrent "
                f"encoder hands its final state to the decoder, so both use one cell), got "
                f"model.cell={self.cell}; or use model.encoder=transformer"
            )
        if self.encoder == "transformer" and self.bidirectional:
            raise ValueError(
                "model.bidirectional=true applies to a recurrent encoder, not "
                "model.encoder=transformer (which sees every frame from every frame)"
            )
        return self


@register_task
class VideoCaptionTask(CaptionTask):
    name = "video-caption"
    summary = "video captioning: frame CNN + recurrent / Transformer encoder over time + decoder"
    DataConfig = VideoCaptionData
    ModelConfig = VideoCaptionModel

    def _read_splits(self) -> dict:
        """The VideoCaptions of each split: generated, or read from the captions files."""
        from seqlab.data.video import moving_shapes, read_video_captions

        data = self.data
        if data.corpus == "shapes":

            def generate(size: int, seed: int) -> VideoCaptions:
                return moving_shapes(
                    size,
                    image_size=data.image_size,
                    min_frames=data.min_frames,
                    max_frames=data.max_frames,
                    max_shapes=data.max_shapes,
                    seed=seed,
                )

            return {
                "train": generate(data.train_size, self.seed),
                "valid": generate(data.valid_size, self.seed + 1),
                "test": generate(data.test_size, self.seed + 2),
            }

        def read(path: str) -> VideoCaptions:
            return read_video_captions(path, data.clip_dir, data.image_size)

        what = (
            "a captions file (TSV clip<TAB>caption; clips are .npy arrays (T, H, W, 3) or folders "
            "of frames, next to it or in data.clip_dir)"
        )
        train = read(require_path(data.train, "data.train", self.recipe, what))
        splits = {"train": train}
        if data.valid:
            splits["valid"] = read(data.valid)
        else:
            kept, held = split_off(list(range(len(train))), data.valid_fraction, self.seed)
            splits["train"], splits["valid"] = _subset(train, kept), _subset(train, held)
        if data.test:
            splits["test"] = read(data.test)
        return splits

    def _inputs(self, item: VideoCaptions) -> ClipTensors:
        return ClipTensors.stack([_keep_frames(clip, self.data.frames) for clip in item.clips])

    def build_model(self) -> torch.nn.Module:
        from seqlab.models.video import VideoCaptioner

        m = self.model_config
        return VideoCaptioner(
            self.tokenizer.vocab_size,
            image_size=self.data.image_size,
            channels=tuple(m.channels),
            encoder=m.encoder,
            encoder_hidden_size=m.encoder_hidden_size,
            encoder_layers=m.encoder_layers,
            bidirectional=m.bidirectional,
            merge_mode=m.merge_mode,
            nhead=m.nhead,
            dim_feedforward=m.dim_feedforward,
            max_frames=m.max_frames,
            frame_differences=m.frame_differences,
            memory=m.memory,
            embedding_dim=m.embedding_dim,
            attention=m.attention,
            attention_size=m.attention_size,
            input_feeding=m.input_feeding,
            label_smoothing=m.label_smoothing,
            pad_id=self.tokenizer.pad_id,
            **m.cell_options(),  # cell, decoder sizes, dropout and the cell's variant options
        )

    def _collate(self, split: str, examples) -> dict[str, torch.Tensor]:
        from seqlab.data.batching import pad_sequences

        index = torch.tensor([clip for clip, _ in examples], dtype=torch.long)
        clips, lengths = self.images[split].batch(index)
        tgt, _ = pad_sequences(
            [caption for _, caption in examples], pad_value=self.tokenizer.pad_id
        )
        return {"clips": clips, "lengths": lengths, "tgt": tgt}

    def training_step(self, model, batch, carry):
        out = model(batch["clips"], batch["lengths"], batch["tgt"])
        tokens = int((batch["tgt"][:, 1:] != self.tokenizer.pad_id).sum())
        return StepOutput(out.loss, tokens)

    def _describe(self, model, clips, lengths, beam_size: int) -> list[str]:
        """Captions of clips (N, F, 3, P, P) with lengths (N,): greedy for beam_size 1, else
        beam search, each capped at `predict.max_length` tokens."""
        from seqlab.decode import best_outputs

        p, t = self.predict_config, self.tokenizer
        return [t.decode(tokens) for tokens in best_outputs(
            model, clips, lengths, t.bos_id, t.eos_id, beam_size=beam_size,
            length_penalty=p.length_penalty, max_length=p.max_length)]

    def _describe_split(self, model, split, batch_size, device, beam_size, count=None):
        """Captions of the split's first `count` clips (all by default), `batch_size` at a time."""
        inputs = self.images[split]
        size = len(inputs) if count is None else min(count, len(inputs))
        outputs = []
        for start in range(0, size, batch_size):
            clips, lengths = inputs.batch(slice(start, min(start + batch_size, size)))
            outputs += self._describe(model, clips.to(device), lengths.to(device), beam_size)
        return outputs

    @torch.no_grad()
    def evaluate(self, model, split, batch_size, device, max_batches=None):
        from seqlab.decode import bleu, exact_match

        model.eval()
        examples = self.examples[split]
        total_loss, total_tokens = 0.0, 0
        lengths = [len(caption) for _, caption in examples]
        for key in spread(eval_batches(lengths, batch_size), max_batches):
            batch = to_device(self._collate(split, [examples[i] for i in key]), device)
            out = model(batch["clips"], batch["lengths"], batch["tgt"])
            nll, tokens = target_nll(out.logits, batch["tgt"], self.tokenizer.pad_id)
            total_loss += nll
            total_tokens += tokens
        count = None if max_batches is None else max_batches * batch_size
        beam_size = self.predict_config.eval_beam_size
        hypotheses = self._describe_split(model, split, batch_size, device, beam_size, count)
        references = _equal_counts(self.references[split][: len(hypotheses)])
        loss = total_loss / max(total_tokens, 1)
        metrics = {
            "loss": loss,
            "perplexity": math.exp(min(loss, 50.0)),
            "bleu": bleu(hypotheses, references),
            "exact_match": exact_match(hypotheses, references),
        }
        if self.data.corpus == "shapes":
            metrics["motion_accuracy"] = motion_accuracy(hypotheses, references)
        return metrics

    def predict(self, model, inputs, device):
        """Each input is a clip: a ``.npy`` array (T, H, W, 3) or a folder of frame images."""
        from seqlab.data.video import load_clip

        model.eval()
        if not inputs:
            return []
        size, frames = self.data.image_size, self.data.frames
        clips = ClipTensors.stack(
            [
                _keep_frames(load_clip(path.strip(), size, where=f"input {n}"), frames)
                for n, path in enumerate(inputs, 1)
            ]
        )
        outputs = []
        for start in range(0, len(clips), 32):
            batch, lengths = clips.batch(slice(start, start + 32))
            outputs += self._describe(
                model, batch.to(device), lengths.to(device), self.predict_config.beam_size
            )
        return outputs

    def report(self, model, device):
        count = self.predict_config.num_examples
        split = "test" if self.examples.get("test") else "valid"
        if not count or not len(self.images[split]):
            return []
        beam_size = self.predict_config.beam_size
        outputs = self._describe_split(model, split, count, device, beam_size, count)
        lines = [f"{len(outputs)} {split} clips (beam size {beam_size}):"]
        for output, references in zip(outputs, self.references[split]):
            mark = "ok" if output.strip() in {r.strip() for r in references} else "  "
            lines.append(f"{mark} {output}    (reference: {references[0]})")
        return lines


def motion_accuracy(hypotheses: list[str], references: list[list[str]]) -> float:
    """Fraction (0..1) of shapes whose motion the hypothesis gets right, slot by slot.

    The slots are the first reference's shape phrases (see
    :func:`seqlab.data.video.motions_of`); the hypothesis's k-th phrase answers the k-th slot,
    and a missing phrase is wrong. "a red circle moves left and a blue square grows" against
    "a red circle moves left and a blue square shrinks" scores 1 of 2.
    """
    from seqlab.data.video import motions_of

    right = total = 0
    for hypothesis, refs in zip(hypotheses, references):
        expected, answered = motions_of(refs[0]), motions_of(hypothesis)
        right += sum(a == e for a, e in zip(answered, expected))
        total += len(expected)
    return right / total if total else 0.0


def _subset(item: VideoCaptions, indices: list[int]) -> VideoCaptions:
    """The clips and captions at `indices`."""
    return VideoCaptions(
        clips=[item.clips[i] for i in indices],
        captions=[item.captions[i] for i in indices],
        names=[item.names[i] for i in indices],
    )
