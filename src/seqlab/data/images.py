"""Images with captions: generated coloured shapes, and a reader for a folder of images.

Generated data (:func:`coloured_shapes`): seeded, numpy only, so captioning runs anywhere with
no download. Each image (black background, H = W = `image_size`) holds one shape, or two
shapes on opposite sides, drawn from

    shapes     circle, square, triangle
    colours    red, green, blue, yellow (pure RGB: (255, 0, 0), (0, 255, 0), (0, 0, 255),
               (255, 255, 0))
    positions  left, right, top, bottom

and its caption names them in a fixed order (left before right, top before bottom), so the
caption is a function of the image and exact match is a fair metric:

    "a red circle on the left and a blue square on the right"
    "a yellow triangle at the top"

User data (:func:`read_image_captions`): a captions file, TSV ``filename<TAB>caption`` with no
header, several lines per image allowed (one reference each), and the images (PNG / JPEG / any
format Pillow reads) in a folder, by default the captions file's own folder. Images are
converted to RGB and resized to `image_size` x `image_size`. Problems raise
:class:`~seqlab.data.readers.DataError` naming the file and line.

Images are uint8 arrays of shape (H, W, 3), channels last, as image files store them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from seqlab.data.readers import DataError, numbered_lines

__all__ = [
    "COLOURS",
    "POSITIONS",
    "SHAPES",
    "ImageCaptions",
    "PlacedShape",
    "caption_of",
    "coloured_shapes",
    "load_image",
    "read_image_captions",
]

SHAPES = ("circle", "square", "triangle")
COLOURS = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
}
POSITIONS = ("left", "right", "top", "bottom")
# Two shapes sit on opposite sides, named in this order in the caption.
_PAIRS = (("left", "right"), ("top", "bottom"))


@dataclass(frozen=True)
class PlacedShape:
    """One drawn shape: what it is, where, and the pixel geometry used to draw it.

    centre: (x, y) pixel coordinates, x to the right, y down. radius: half the shape's width.
    """

    shape: str
    colour: str
    position: str
    centre: tuple[int, int]
    radius: int


def _phrase(placed: PlacedShape) -> str:
    where = "on the" if placed.position in ("left", "right") else "at the"
    return f"a {placed.colour} {placed.shape} {where} {placed.position}"


def caption_of(shapes: list[PlacedShape]) -> str:
    """The caption of a scene: its shapes' phrases joined by "and", in the given order."""
    return " and ".join(_phrase(placed) for placed in shapes)


def _nominal_centre(position: str, image_size: int) -> tuple[int, int]:
    """Centre of a position's quarter: left = (W/4, H/2), top = (W/2, H/4), ..."""
    near, middle, far = image_size // 4, image_size // 2, image_size - image_size // 4
    return {
        "left": (near, middle),
        "right": (far, middle),
        "top": (middle, near),
        "bottom": (middle, far),
    }[position]


# Samples per pixel side: edges are anti-aliased like a resized photo, not stair-stepped.
_SUPERSAMPLE = 4


def _inside(shape: str, dx: np.ndarray, dy: np.ndarray, radius: int) -> np.ndarray:
    """Whether points at offsets (dx, dy) from the centre lie in the shape."""
    if shape == "circle":
        return dx * dx + dy * dy <= radius * radius
    if shape == "square":
        return (np.abs(dx) <= radius) & (np.abs(dy) <= radius)
    # Triangle, apex up: rows from centre - radius (apex) to centre + radius (base), each
    # half as wide as its distance below the apex.
    below_apex = dy + radius
    return (dy <= radius) & (below_apex >= 0) & (2 * np.abs(dx) <= below_apex)


def _coverage(
    shape: str, centre: tuple[int, int], radius: int, image_size: int
) -> tuple[slice, slice, np.ndarray]:
    """Fraction of each pixel the shape covers, from a grid of sub-pixel samples.

    Only the shape's bounding box is sampled: returns its (rows, columns) slices and the
    (h, w) coverage inside it.
    """
    samples = _SUPERSAMPLE
    x, y = centre
    rows = slice(max(0, y - radius - 1), min(image_size, y + radius + 2))
    columns = slice(max(0, x - radius - 1), min(image_size, x + radius + 2))
    height, width = rows.stop - rows.start, columns.stop - columns.start

    def offsets(first: int, count: int) -> np.ndarray:
        return first + (np.arange(count * samples) + 0.5) / samples - 0.5  # in pixel units

    ys, xs = np.meshgrid(offsets(rows.start, height), offsets(columns.start, width), indexing="ij")
    inside = _inside(shape, xs - x, ys - y, radius)  # (h * s, w * s)
    per_pixel = inside.reshape(height, samples, width, samples)  # (h, s, w, s)
    return rows, columns, per_pixel.mean(axis=(1, 3))  # (h, w)


def _draw(image: np.ndarray, placed: PlacedShape) -> None:
    rows, columns, coverage = _coverage(placed.shape, placed.centre, placed.radius, image.shape[0])
    colour = np.array(COLOURS[placed.colour], dtype=np.float64)
    painted = np.rint(coverage[..., None] * colour).astype(np.uint8)  # (h, w, 3)
    # Shapes never overlap and the background is black, so the brighter value is the shape's.
    np.maximum(image[rows, columns], painted, out=image[rows, columns])


@dataclass
class ImageCaptions:
    """Images and their captions (several per image allowed).

    images: (N, H, W, 3) uint8. captions: N lists of strings, each non-empty.
    names: N file names (generated data: ``"shapes-<index>"``).
    shapes: for generated data, the N scenes as drawn (for checks); empty for files.
    """

    images: np.ndarray
    captions: list[list[str]]
    names: list[str]
    shapes: list[list[PlacedShape]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.captions)


def coloured_shapes(
    size: int,
    image_size: int = 32,
    max_shapes: int = 2,
    seed: int = 0,
) -> ImageCaptions:
    """`size` generated images of one or `max_shapes` (<= 2) coloured shapes, with captions.

    Shape, colour and position are uniform; with two shapes the sides are left / right or top /
    bottom with equal chance. Each shape's radius is drawn from [image_size/8, image_size/6]
    and its centre jitters by up to image_size/32 pixels around its quarter's centre, so shapes
    never touch. Edges are anti-aliased (each pixel holds the colour times the fraction of it
    the shape covers), so the pictures look like resized drawings; pixels wholly inside a shape
    have its pure colour. The same (size, image_size, max_shapes, seed) always gives the same data.
    """
    if size < 1:
        raise ValueError(f"size should be a positive integer, got {size}")
    if image_size < 16:
        raise ValueError(f"image_size should be at least 16 pixels, got {image_size}")
    if max_shapes not in (1, 2):
        raise ValueError(f"max_shapes should be 1 or 2, got {max_shapes}")
    rng = np.random.default_rng(seed)
    images = np.zeros((size, image_size, image_size, 3), dtype=np.uint8)  # (N, H, W, 3)
    smallest, largest = max(2, image_size // 8), max(3, image_size // 6)
    jitter = max(1, image_size // 32)
    scenes, captions = [], []
    for index in range(size):
        count = int(rng.integers(1, max_shapes + 1))
        if count == 1:
            positions = [POSITIONS[int(rng.integers(len(POSITIONS)))]]
        else:
            positions = list(_PAIRS[int(rng.integers(len(_PAIRS)))])
        scene = []
        for position in positions:
            x, y = _nominal_centre(position, image_size)
            dx, dy = rng.integers(-jitter, jitter + 1, size=2)
            scene.append(
                PlacedShape(
                    shape=SHAPES[int(rng.integers(len(SHAPES)))],
                    colour=list(COLOURS)[int(rng.integers(len(COLOURS)))],
                    position=position,
                    centre=(int(x + dx), int(y + dy)),
                    radius=int(rng.integers(smallest, largest + 1)),
                )
            )
        for placed in scene:
            _draw(images[index], placed)
        scenes.append(scene)
        captions.append([caption_of(scene)])
    names = [f"shapes-{index}" for index in range(size)]
    return ImageCaptions(images=images, captions=captions, names=names, shapes=scenes)


def load_image(path: str | Path, image_size: int = 32, where: str | None = None) -> np.ndarray:
    """Read an image file as RGB, resized to (image_size, image_size, 3) uint8.

    `where` (e.g. ``"captions.tsv, line 4"``) is prefixed to error messages.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    prefix = f"{where}: " if where else ""
    if not path.is_file():
        raise DataError(f"{prefix}image {path} does not exist; check the file name and folder")
    try:
        with Image.open(path) as opened:
            rgb = opened.convert("RGB")
            rgb = rgb.resize((image_size, image_size), Image.Resampling.BILINEAR)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(
            f"{prefix}cannot read image {path} ({exc.__class__.__name__}: {exc}); give a PNG or "
            f"JPEG file"
        ) from None
    return np.asarray(rgb, dtype=np.uint8)  # (H, W, 3)


def read_named_captions(path: Path, load, key: str, name_word: str, item: str):
    """Lines ``name<TAB>caption`` of `path` -> (items, captions per item, names), one entry per
    distinct name in order of first appearance; `load(name, where)` reads an item. The reader
    behind image and clip captions files."""
    order: dict[str, int] = {}
    items: list = []
    captions: list[list[str]] = []
    for line, text in numbered_lines(path):
        if not text.strip():
            continue
        name, tab, caption = text.partition("\t")
        name, caption = name.strip(), caption.strip()
        if not tab:
            raise DataError(
                f"{path}, line {line}: expected '{key}<TAB>caption', found no tab in {text[:60]!r}"
            )
        if not name:
            raise DataError(f"{path}, line {line}: empty {name_word} before the tab")
        if not caption:
            raise DataError(f"{path}, line {line}: empty caption for {item} {name!r}")
        if name not in order:
            order[name] = len(items)
            items.append(load(name, f"{path}, line {line}"))
            captions.append([])
        captions[order[name]].append(caption)
    if not items:
        raise DataError(f"{path} holds no captions; expected lines '{key}<TAB>caption'")
    return items, captions, list(order)


def read_image_captions(
    path: str | Path, image_dir: str | Path | None = None, image_size: int = 32
) -> ImageCaptions:
    """Read a captions file (TSV ``filename<TAB>caption``) and the images it names.

    Args:
        path: the captions file (UTF-8, optionally ``.gz``); blank lines are skipped.
        image_dir: the folder the file names are relative to; default the captions file's folder.
        image_size: images are resized to image_size x image_size.

    Returns:
        One entry per distinct image, in order of first appearance, with all of its captions.
    """
    path = Path(path)
    folder = Path(image_dir) if image_dir is not None else path.parent
    if image_dir is not None and not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist or is not a folder")
    images, captions, names = read_named_captions(
        path, lambda name, where: load_image(folder / name, image_size, where=where),
        key="filename", name_word="file name", item="image",
    )
    return ImageCaptions(images=np.stack(images), captions=captions, names=names)
