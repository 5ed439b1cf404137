"""Image classification with a Vision Transformer or a small CNN (`task: image-classify`).

Data path: images (N, C, H, W) float in [0, 1] + class ids (N,) -> VisionTransformer (patches
as tokens, a class token) or SmallCNN -> cross-entropy. Metrics: loss, accuracy.
`seqlab predict RUN picture.png ...` prints each picture's class and its probability.

`data.corpus` picks the images:

- `digits`: scikit-learn's 8x8 handwritten digits as 1-channel images, with the test split of
  :func:`seqlab.data.tasks.digits` (the one `digits-gru` reads row by row, for the same
  `trainer.seed` and `data.test_fraction`) and the same held-out validation images.
- `shapes`: generated pictures of one coloured shape (:func:`seqlab.data.images.coloured_shapes`
  with one shape per picture, at the left, right, top or bottom); the label is the shape
  (`data.label: shape`, 3 classes: circle, square, triangle) or colour and shape
  (`data.label: colour-shape`, 12 classes such as "red circle"). Splits use seeds seed,
  seed + 1, seed + 2.
- `files`: a labels file, TSV ``filename<TAB>label`` with no header (`data.train`, optional
  `data.valid` / `data.test`), with the images next to it or in `data.image_dir`; images are
  read as RGB and resized to `data.image_size`.

`data.shift` > 0 shifts each training image by a random whole number of pixels in
[-shift, shift] along each axis (zero filled), a small augmentation that matters for a ViT,
which has no built-in translation equivariance.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from seqlab.schema import StrictModel
from seqlab.tasks import register_task
from seqlab.tasks.base import TensorTask, require_path, shard_batches, split_off

__all__ = ["ImageClassifyTask", "read_image_labels", "shift_images"]


def shift_images(images: torch.Tensor, shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by (dy, dx), each uniform in [-shift, shift], filling with zeros.

    ======== ==============
    images   (N, C, H, W)
    output   (N, C, H, W)
    ======== ==============
    """
    if shift == 0:
        return images
    n, _, height, width = images.shape
    padded = F.pad(images, (shift, shift, shift, shift))  # (N, C, H + 2s, W + 2s)
    dy, dx = torch.randint(0, 2 * shift + 1, (2, n), generator=generator)  # (N,) each
    rows = dy[:, None] + torch.arange(height)  # (N, H)
    columns = dx[:, None] + torch.arange(width)  # (N, W)
    batch = torch.arange(n)[:, None, None]
    cropped = padded[batch, :, rows[:, :, None], columns[:, None, :]]  # (N, H, W, C)
    return cropped.permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)


def read_image_labels(
    path: str | Path, image_dir: str | Path | None = None, image_size: int = 32
) -> tuple[np.ndarray, list[str]]:
    """Read a labels file (TSV ``filename<TAB>label``, no header) and the images it names.

    Returns images (N, H, W, 3) uint8 and N label strings; blank lines are skipped. A line
    without a tab, an empty name or label, or an unreadable image is a DataError naming the
    file and line.
    """
    from seqlab.data.images import load_image
    from seqlab.data.readers import DataError, numbered_lines

    path = Path(path)
    folder = Path(image_dir) if image_dir is not None else path.parent
    if image_dir is not None and not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist or is not a folder")
    images, labels = [], []
    for line, text in numbered_lines(path):
        if not text.strip():
            continue
        name, tab, label = text.partition("\t")
        name, label = name.strip(), label.strip()
        if not tab:
            raise DataError(
                f"{path}, line {line}: expected 'filename<TAB>label', found no tab in {text[:60]!r}"
            )
        if not name or not label:
            raise DataError(f"{path}, line {line}: empty {'file name' if not name else 'label'}")
        images.append(load_image(folder / name, image_size, where=f"{path}, line {line}"))
        labels.append(label)
    if not images:
        raise DataError(f"{path} holds no images; expected lines 'filename<TAB>label'")
    return np.stack(images), labels


def _largest_side(path: str) -> int:
    """The larger of an image file's width and height; 1 when it cannot be read (the reader
    that follows names the problem)."""
    from PIL import Image

    try:
        with Image.open(path) as opened:
            return max(opened.size)
    except (OSError, ValueError):
        return 1


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0


class ImageData(StrictModel):
    corpus: Literal["digits", "shapes", "files"] = "digits"
    # digits: the split of seqlab.data.tasks.digits, then a validation share of its training part.
    test_fraction: float = Field(0.2, gt=0, lt=1)
    valid_fraction: float = Field(0.1, gt=0, lt=1)
    # shapes: generated one-shape pictures and what their label names.
    label: Literal["shape", "colour-shape"] = "shape"
    train_size: int = Field(3000, ge=1)
    valid_size: int = Field(300, ge=1)
    test_size: int = Field(600, ge=1)
    # shapes and files: pictures are image_size x image_size RGB.
    image_size: int = Field(32, ge=8)
    # files: TSV filename<TAB>label.
    train: str | None = None
    valid: str | None = None
    test: str | None = None
    image_dir: str | None = None
    # Augmentation of training batches: random shifts of up to `shift` pixels.
    shift: int = Field(0, ge=0)


# Keys that only one model family reads, with their defaults.
_FAMILY_KEYS = {
    "patch_size": ("vit", 2),
    "d_model": ("vit", 64),
    "nhead": ("vit", 4),
    "num_layers": ("vit", 4),
    "dim_feedforward": ("vit", None),
    "activation": ("vit", "gelu"),
    "norm_first": ("vit", True),
    "channels": ("cnn", [32, 64]),
}


class ImageModel(StrictModel):
    family: Literal["vit", "cnn"] = "vit"
    patch_size: int = Field(2, ge=1)
    d_model: int = Field(64, ge=1)
    nhead: int = Field(4, ge=1)
    num_layers: int = Field(4, ge=1)
    dim_feedforward: int | None = Field(None, ge=1)
    activation: Literal["relu", "gelu", "gelu_tanh"] = "gelu"
    norm_first: bool = True
    channels: list[int] = Field(default_factory=lambda: [32, 64], min_length=1)
    dropout: float = Field(0.1, ge=0, le=1)

    @model_validator(mode="after")
    def _check_family_keys(self):
        for name, (owner, default) in _FAMILY_KEYS.items():
            value = getattr(self, name)
            if self.family != owner and value != default:
                raise ValueError(
                    f"model.{name}={value!r} only applies to model.family={owner}, "
                    f"but model.family={self.family} (leave model.{name} out)"
                )
        if self.family == "vit" and self.d_model % self.nhead:
            raise ValueError(
                f"model.d_model={self.d_model} should be divisible by model.nhead={self.nhead}"
            )
        return self


@register_task
class ImageClassifyTask(TensorTask):
    name = "image-classify"
    summary = "image classification: a Vision Transformer (patches as tokens) or a small CNN"
    DataConfig = ImageData
    ModelConfig = ImageModel
    # The best checkpoint is the one of lowest validation loss: on a few hundred validation
    # images accuracy soon reaches 1.0 and then cannot tell later, better checkpoints apart.
    metric = "loss"
    mode = "min"

    labels = None

    def _generated_shapes(self, size: int, seed: int) -> tuple[torch.Tensor, list[str]]:
        from seqlab.data.images import coloured_shapes

        data = coloured_shapes(size, image_size=self.data.image_size, max_shapes=1, seed=seed)
        if self.data.label == "shape":
            names = [scene[0].shape for scene in data.shapes]
        else:
            names = [f"{scene[0].colour} {scene[0].shape}" for scene in data.shapes]
        return _to_tensor(data.images), names

    def _read_splits(self) -> dict[str, tuple[torch.Tensor, list[str]]]:
        """Each split's images (N, C, H, W) in [0, 1] and label strings."""
        data = self.data
        if data.corpus == "digits":
            from seqlab.data.tasks import digits

            splits = digits(sequence="rows", seed=self.seed, test_fraction=data.test_fraction)
            x, y = splits["train"]
            kept, held = split_off(list(range(len(y))), data.valid_fraction, self.seed)
            test_x, test_y = splits["test"]

            def grey(images, labels):
                return images.unsqueeze(1), [str(int(label)) for label in labels]  # (N, 1, 8, 8)

            return {"train": grey(x[kept], y[kept]), "valid": grey(x[held], y[held]),
                    "test": grey(test_x, test_y)}
        if data.corpus == "shapes":
            return {
                "train": self._generated_shapes(data.train_size, self.seed),
                "valid": self._generated_shapes(data.valid_size, self.seed + 1),
                "test": self._generated_shapes(data.test_size, self.seed + 2),
            }

        def read(path: str) -> tuple[torch.Tensor, list[str]]:
            images, labels = read_image_labels(path, data.image_dir, data.image_size)
            return _to_tensor(images), labels

        what = "a labels file (TSV filename<TAB>label, images next to it or in data.image_dir)"
        train_x, train_y = read(require_path(data.train, "data.train", self.recipe, what))
        splits = {}
        if data.valid:
            splits["train"], splits["valid"] = (train_x, train_y), read(data.valid)
        else:
            kept, held = split_off(list(range(len(train_y))), data.valid_fraction, self.seed)
            splits["train"] = (train_x[kept], [train_y[i] for i in kept])
            splits["valid"] = (train_x[held], [train_y[i] for i in held])
        if data.test:
            splits["test"] = read(data.test)
        return splits

    def prepare(self, fit_vocab: bool = True) -> None:
        from seqlab.data.readers import DataError
        from seqlab.data.tokenizers import LabelVocab

        splits = self._read_splits()
        if fit_vocab:
            self.labels = LabelVocab(splits["train"][1])
        self.tensors = {}
        for split, (images, names) in splits.items():
            unknown = sorted(set(names) - set(self.labels.labels))
            if unknown:
                raise DataError(
                    f"the {split} images have label {unknown[0]!r}, which the training images do "
                    f"not have (known labels: {', '.join(self.labels.labels)})"
                )
            targets = torch.tensor([self.labels.encode(name) for name in names], dtype=torch.long)
            self.tensors[split] = (images, targets)

    @property
    def image_shape(self) -> tuple[int, int]:
        """(channels, side) of the images the model takes."""
        if self.data.corpus == "digits":
            return 1, 8
        return 3, self.data.image_size

    def save_artifacts(self, run_dir: Path) -> None:
        self.labels.save(run_dir / "labels.json")

    def load_artifacts(self, run_dir: Path) -> None:
        from seqlab.data.tokenizers import LabelVocab

        self.labels = LabelVocab.load(run_dir / "labels.json")

    def build_model(self) -> torch.nn.Module:
        from seqlab.models.vision import SmallCNN, VisionTransformer

        m = self.model_config
        channels, side = self.image_shape
        if m.family == "cnn":
            return SmallCNN(side, len(self.labels), in_channels=channels,
                            channels=tuple(m.channels), dropout=m.dropout)
        return VisionTransformer(
            side, m.patch_size, len(self.labels), in_channels=channels, d_model=m.d_model,
            nhead=m.nhead, num_layers=m.num_layers, dim_feedforward=m.dim_feedforward,
            dropout=m.dropout, activation=m.activation, norm_first=m.norm_first,
        )

    def train_batches(self, epoch, batch_size, rank=0, world_size=1):
        from seqlab.data.batching import batches

        order = batches(len(self.tensors["train"][1]), batch_size, shuffle=True, seed=self.seed,
                        epoch=epoch)
        # The epoch travels with each batch: it seeds the batch's augmentation.
        return shard_batches([(epoch, indices) for indices in order], rank, world_size)

    def collate(self, key):
        epoch, indices = key
        index = torch.as_tensor(indices, dtype=torch.long)
        images, targets = self.tensors["train"]
        generator = torch.Generator().manual_seed(
            self.seed * 1_000_003 + epoch * 100_003 + int(index[0]))
        return {"inputs": shift_images(images[index], self.data.shift, generator),
                "targets": targets[index]}

    def training_step(self, model, batch, carry):
        from seqlab.tasks.base import StepOutput

        out = model(batch["inputs"], targets=batch["targets"])
        return StepOutput(out.loss, int(batch["inputs"].size(0)))

    def batch_metrics(self, model, batch):
        out = model(batch["inputs"], targets=batch["targets"])
        n = batch["targets"].numel()
        return {"loss": float(out.loss) * n,
                "accuracy": float((out.logits.argmax(-1) == batch["targets"]).sum())}

    def load_pictures(self, paths: list[str]) -> torch.Tensor:
        """Image files as the model's input (N, C, H, W) in [0, 1].

        For digits the picture becomes 8x8 grey with the ink bright, as in the data: each of
        the 8x8 cells is the mean of the pixels it covers (a picture drawn large keeps its
        strokes), and a picture whose mean is above one half (dark ink on a light page) is
        inverted.
        """
        from seqlab.data.images import load_image

        channels, side = self.image_shape
        if channels == 3:
            arrays = [load_image(path.strip(), side, where=f"input {n}")
                      for n, path in enumerate(paths, 1)]
            return _to_tensor(np.stack(arrays))  # (N, 3, H, W)
        pictures = []
        for n, path in enumerate(paths, 1):
            # Read at a multiple of 8 at least as large as the file, then average 8x8 cells.
            scale = max(1, math.ceil(_largest_side(path.strip()) / side))
            array = load_image(path.strip(), side * scale, where=f"input {n}")  # (8s, 8s, 3)
            grey = _to_tensor(np.array(array)[None]).mean(1, keepdim=True)  # (1, 1, 8s, 8s)
            pictures.append(F.avg_pool2d(grey, scale))  # (1, 1, 8, 8)
        images = torch.cat(pictures)  # (N, 1, 8, 8)
        light = images.mean((1, 2, 3)) > 0.5  # (N,)
        images[light] = 1.0 - images[light]
        return images

    @torch.no_grad()
    def predict(self, model, inputs, device):
        """Each input is the path of an image file; prints ``label<TAB>probability``."""
        model.eval()
        if not inputs:
            return []
        probs = model(self.load_pictures(inputs).to(device)).logits.float().softmax(-1)  # (N, K)
        best = probs.argmax(-1)
        return [f"{self.labels.decode(int(k))}\t{float(p[k]):.3f}" for k, p in zip(best, probs)]
