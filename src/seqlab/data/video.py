"""Video clips with captions: generated moving shapes, and a reader for a folder of clips.

Generated data (:func:`moving_shapes`): seeded, numpy only, so video captioning runs anywhere
with no download. Each clip is T frames (T drawn from [min_frames, max_frames]) of
H = W = `image_size` pixels on black, holding one shape, or two shapes each in its own half of
the frame (left / right or top / bottom, so they never overlap). Every shape does one thing over
the clip:

    motions    moves left, moves right, moves up, moves down (its centre travels
               ``round(3 * image_size / 16)`` pixels, at a steady speed), grows, shrinks (its
               radius goes from image_size/16 to 5 * image_size/32 or back), stays

with the shapes and colours of :mod:`seqlab.data.images`, drawn by the same (anti-aliased) code.
The caption names each shape and what it does, the shapes in a fixed order (left half before
right, top before bottom), so the caption is a function of the clip and exact match is fair:

    "a red circle moves left"
    "a blue square moves up and a green triangle stays"

No single frame tells the motion: a moving shape's path is placed anywhere its half allows, so
a still picture shows a shape somewhere, never where it is going.

User data (:func:`read_video_captions`): a captions file, TSV ``clip<TAB>caption`` with no
header, several lines per clip allowed (one reference each). A clip is either a ``.npy`` array
(T, H, W, 3), uint8 or float in [0, 1], or a folder of frame images (PNG / JPEG / ... ; read in
natural name order, so ``frame2.png`` comes before ``frame10.png``). Frames are resized to
`image_size` x `image_size`. Problems raise :class:`~seqlab.data.readers.DataError` naming the
file and line.

Clips are uint8 arrays of shape (T, H, W, 3), channels last, as image files store them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from seqlab.data.images import COLOURS, SHAPES, PlacedShape, _draw, load_image, read_named_captions
from seqlab.data.readers import DataError

__all__ = [
    "FRAME_SUFFIXES",
    "MOTIONS",
    "MovingShape",
    "VideoCaptions",
    "load_clip",
    "motions_of",
    "moving_shapes",
    "read_video_captions",
    "video_caption_of",
]

MOTIONS = ("moves left", "moves right", "moves up", "moves down", "grows", "shrinks", "stays")
# Where the centre goes over the clip, as (dx, dy) per unit of travel (y grows downwards).
_DIRECTIONS = {
    "moves left": (-1, 0),
    "moves right": (1, 0),
    "moves up": (0, -1),
    "moves down": (0, 1),
}
# Two shapes live in opposite halves, named in this order in the caption.
_HALVES = (("left", "right"), ("top", "bottom"))
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


@dataclass(frozen=True)
class MovingShape:
    """One shape of a clip: what it is, what it does, and how it is drawn in each frame.

    half: the half of the frame it lives in ("left", "right", "top", "bottom"), or "whole" when
    it is alone. path: one :class:`~seqlab.data.images.PlacedShape` per frame (its centre and
    radius there; the PlacedShape's `position` is the half).
    """

    shape: str
    colour: str
    motion: str
    half: str
    path: tuple[PlacedShape, ...]


def _phrase(moving: MovingShape) -> str:
    return f"a {moving.colour} {moving.shape} {moving.motion}"


def video_caption_of(shapes: list[MovingShape]) -> str:
    """The caption of a clip: its shapes' phrases joined by "and", in the given order."""
    return " and ".join(_phrase(moving) for moving in shapes)


def motions_of(caption: str) -> list[str]:
    """The motion of each shape phrase of a caption, in order (the per-slot words to score).

    >>> motions_of("a red circle moves left and a blue square stays")
    ['moves left', 'stays']

    A phrase is what lies between "and"s; its motion is every word after the third ("a",
    colour, shape). A phrase of three words or fewer has the empty motion "".
    """
    phrases = caption.strip().split(" and ") if caption.strip() else []
    return [" ".join(phrase.split()[3:]) for phrase in phrases]


@dataclass
class VideoCaptions:
    """Clips and their captions (several per clip allowed).

    clips: N uint8 arrays (T_i, H, W, 3); lengths differ from clip to clip.
    captions: N lists of strings, each non-empty.
    names: N clip names (generated data: ``"clip-<index>"``).
    shapes: for generated data, the N clips' shapes as drawn (for checks); empty for files.
    """

    clips: list[np.ndarray]
    captions: list[list[str]]
    names: list[str]
    shapes: list[list[MovingShape]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.captions)


def _box(half: str, image_size: int) -> tuple[int, int, int, int]:
    """The pixels (x0, x1, y0, y1), half open, that a shape in `half` may cover."""
    middle = image_size // 2
    return {
        "whole": (0, image_size, 0, image_size),
        "left": (0, middle, 0, image_size),
        "right": (middle, image_size, 0, image_size),
        "top": (0, image_size, 0, middle),
        "bottom": (0, image_size, middle, image_size),
    }[half]


def _path(
    rng: np.random.Generator, motion: str, half: str, frames: int, image_size: int
) -> list[tuple[tuple[int, int], int]]:
    """(centre, radius) of a shape in each of `frames` frames, its pixels kept inside `half`.

    A shape of radius r covers the pixels [c - r, c + r] on each axis, so its centre lies in
    [x0 + r, x1 - 1 - r]. A move travels `travel` pixels; the start is uniform over the starts
    that keep the whole path inside, and the centre of frame t is start + travel * t / (T - 1),
    rounded. Growing and shrinking run the radius between its small and large size the same way.
    """
    x0, x1, y0, y1 = _box(half, image_size)
    small, large = max(1, image_size // 16), max(2, 5 * image_size // 32)
    travel = round(3 * image_size / 16)
    if motion in ("grows", "shrinks"):
        first, last = (small, large) if motion == "grows" else (large, small)
        margin = large
    else:
        first = last = int(rng.integers(max(2, 3 * image_size // 32), image_size // 8 + 1))
        margin = first
    low = np.array([x0 + margin, y0 + margin])  # (2,) lowest centre (x, y)
    high = np.array([x1 - 1 - margin, y1 - 1 - margin])  # (2,) highest centre
    start = np.array([int(rng.integers(lo, hi + 1)) for lo, hi in zip(low, high)])
    step = np.zeros(2, dtype=np.int64)
    if motion in _DIRECTIONS:
        step = np.array(_DIRECTIONS[motion]) * travel  # (2,) displacement over the clip
        # Start where the whole path fits: against the direction of travel, `travel` inside.
        for axis in range(2):
            if step[axis] > 0:
                start[axis] = int(rng.integers(low[axis], high[axis] - travel + 1))
            elif step[axis] < 0:
                start[axis] = int(rng.integers(low[axis] + travel, high[axis] + 1))
    path = []
    for t in range(frames):
        fraction = t / (frames - 1)
        centre = np.floor(start + step * fraction + 0.5).astype(int)  # (2,) rounded half up
        radius = int(np.floor(first + (last - first) * fraction + 0.5))
        path.append(((int(centre[0]), int(centre[1])), radius))
    return path


def moving_shapes(
    size: int,
    image_size: int = 32,
    min_frames: int = 8,
    max_frames: int = 12,
    max_shapes: int = 2,
    seed: int = 0,
) -> VideoCaptions:
    """`size` generated clips of one or `max_shapes` (<= 2) moving coloured shapes, with captions.

    The number of frames is uniform in [min_frames, max_frames]; shape, colour and motion are
    uniform; with two shapes the halves are left / right or top / bottom with equal chance.
    The same arguments always give the same clips.
    """
    if size < 1:
        raise ValueError(f"size should be a positive integer, got {size}")
    if image_size < 16:
        raise ValueError(f"image_size should be at least 16 pixels, got {image_size}")
    if not 2 <= min_frames <= max_frames:
        raise ValueError(
            f"need 2 <= min_frames <= max_frames (a motion takes at least two frames), got "
            f"min_frames={min_frames} and max_frames={max_frames}"
        )
    if max_shapes not in (1, 2):
        raise ValueError(f"max_shapes should be 1 or 2, got {max_shapes}")
    rng = np.random.default_rng(seed)
    clips, captions, scenes = [], [], []
    for _ in range(size):
        frames = int(rng.integers(min_frames, max_frames + 1))
        count = int(rng.integers(1, max_shapes + 1))
        halves = ["whole"] if count == 1 else list(_HALVES[int(rng.integers(len(_HALVES)))])
        clip = np.zeros((frames, image_size, image_size, 3), dtype=np.uint8)  # (T, H, W, 3)
        scene = []
        for half in halves:
            shape = SHAPES[int(rng.integers(len(SHAPES)))]
            colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
            motion = MOTIONS[int(rng.integers(len(MOTIONS)))]
            path = tuple(
                PlacedShape(shape, colour, half, centre, radius)
                for centre, radius in _path(rng, motion, half, frames, image_size)
            )
            for frame, placed in zip(clip, path):
                _draw(frame, placed)
            scene.append(MovingShape(shape, colour, motion, half, path))
        clips.append(clip)
        scenes.append(scene)
        captions.append([video_caption_of(scene)])
    names = [f"clip-{index}" for index in range(size)]
    return VideoCaptions(clips=clips, captions=captions, names=names, shapes=scenes)


def _natural_key(path: Path) -> list:
    """Sort key that orders embedded numbers by value: frame2 < frame10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def _resized(frame: np.ndarray, image_size: int) -> np.ndarray:
    """One (H, W, 3) uint8 frame resized to (image_size, image_size, 3), as load_image does."""
    if frame.shape[:2] == (image_size, image_size):
        return frame
    from PIL import Image

    picture = Image.fromarray(frame).resize((image_size, image_size), Image.Resampling.BILINEAR)
    return np.asarray(picture, dtype=np.uint8)


def _array_clip(path: Path, image_size: int, prefix: str) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(
            f"{prefix}cannot read clip {path} ({exc.__class__.__name__}: {exc}); give a .npy "
            f"array saved with numpy.save"
        ) from None
    if array.ndim != 4 or array.shape[-1] != 3:
        raise DataError(
            f"{prefix}clip {path} has shape {array.shape}; expected (T, H, W, 3): frames, "
            f"height, width and RGB channels last"
        )
    if array.shape[0] == 0:
        raise DataError(f"{prefix}clip {path} has no frames")
    if array.dtype == np.uint8:
        pixels = array
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise DataError(
                f"{prefix}clip {path} holds floats outside [0, 1] (min {float(array.min()):g}, "
                f"max {float(array.max()):g}); save uint8 pixels or floats in [0, 1]"
            )
        pixels = np.rint(array * 255).astype(np.uint8)
    else:
        raise DataError(
            f"{prefix}clip {path} has dtype {array.dtype}; expected uint8 pixels (0..255) or "
            f"floats in [0, 1]"
        )
    return np.stack([_resized(frame, image_size) for frame in pixels])


def _folder_clip(path: Path, image_size: int, where: str | None) -> np.ndarray:
    frames = sorted(
        (p for p in path.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES),
        key=_natural_key,
    )
    if not frames:
        prefix = f"{where}: " if where else ""
        raise DataError(
            f"{prefix}clip folder {path} holds no frame images (files ending in "
            f"{', '.join(FRAME_SUFFIXES)})"
        )
    return np.stack([load_image(frame, image_size, where=where) for frame in frames])


def load_clip(path: str | Path, image_size: int = 32, where: str | None = None) -> np.ndarray:
    """Read a clip, a ``.npy`` array (T, H, W, 3) or a folder of frame images, as uint8
    (T, image_size, image_size, 3).

    `where` (e.g. ``"captions.tsv, line 4"``) is prefixed to error messages.
    """
    path = Path(path)
    prefix = f"{where}: " if where else ""
    if path.is_dir():
        return _folder_clip(path, image_size, where)
    if not path.is_file():
        raise DataError(
            f"{prefix}clip {path} does not exist; give a .npy array (T, H, W, 3) or a folder of "
            f"frame images"
        )
    if path.suffix.lower() != ".npy":
        raise DataError(
            f"{prefix}clip {path} is neither a .npy array nor a folder of frames; save the "
            f"frames as a (T, H, W, 3) array with numpy.save, or put them in a folder"
        )
    return _array_clip(path, image_size, prefix)


def read_video_captions(
    path: str | Path, clip_dir: str | Path | None = None, image_size: int = 32
) -> VideoCaptions:
    """Read a captions file (TSV ``clip<TAB>caption``) and the clips it names.

    Args:
        path: the captions file (UTF-8, optionally ``.gz``); blank lines are skipped.
        clip_dir: the folder the clip names are relative to; default the captions file's folder.
        image_size: frames are resized to image_size x image_size.

    Returns:
        One entry per distinct clip, in order of first appearance, with all of its captions.
    """
    path = Path(path)
    folder = Path(clip_dir) if clip_dir is not None else path.parent
    if clip_dir is not None and not folder.is_dir():
        raise DataError(f"clip folder {folder} does not exist or is not a folder")
    clips, captions, names = read_named_captions(
        path, lambda name, where: load_clip(folder / name, image_size, where=where),
        key="clip", name_word="clip name", item="clip",
    )
    return VideoCaptions(clips=clips, captions=captions, names=names)
