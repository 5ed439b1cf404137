"""Generated shapes: reproducible, captions say what is drawn; the image-folder reader and its errors."""

import numpy as np
import pytest
from PIL import Image

from seqlab.data import DataError, coloured_shapes, load_image, read_image_captions
from seqlab.data.images import COLOURS, caption_of


def test_same_seed_same_images_and_captions():
    first, again = coloured_shapes(20, seed=3), coloured_shapes(20, seed=3)
    other = coloured_shapes(20, seed=4)
    np.testing.assert_array_equal(first.images, again.images)
    assert first.captions == again.captions
    assert first.images.shape == (20, 32, 32, 3) and first.images.dtype == np.uint8
    assert not np.array_equal(first.images, other.images)


def _is(image, x, y, colour):
    return tuple(int(v) for v in image[y, x]) == COLOURS[colour]


def test_captions_match_the_drawn_shapes():
    data = coloured_shapes(200, image_size=32, seed=0)
    seen_counts = set()
    for image, captions, scene in zip(data.images, data.captions, data.shapes):
        seen_counts.add(len(scene))
        assert captions == [caption_of(scene)]
        words = captions[0].split()
        for placed in scene:
            x, y = placed.centre
            r = placed.radius
            colour = placed.colour
            # The caption names this shape's colour, kind and side, in that order.
            assert f"{colour} {placed.shape}" in captions[0] and placed.position in words
            assert _is(image, x, y, colour)
            side = {"left": x < 16, "right": x > 16, "top": y < 16, "bottom": y > 16}
            assert side[placed.position]
            # Probe pixels that tell the three kinds apart (edges are anti-aliased, so the
            # probes sit one pixel inside the outline where a shape covers them whole).
            inner = r - 1
            corners = [(x + dx, y + dy) for dx in (-inner, inner) for dy in (-inner, inner)]
            if placed.shape == "square":
                assert all(_is(image, cx, cy, colour) for cx, cy in corners)
            elif placed.shape == "circle":
                assert _is(image, x + inner, y, colour) and _is(image, x, y - inner, colour)
                assert not any(_is(image, cx, cy, colour) for cx, cy in corners)
            else:  # triangle, apex up
                assert _is(image, x, y - r + 2, colour)
                assert _is(image, x - r + 2, y + inner, colour)
                assert _is(image, x + r - 2, y + inner, colour)
                assert not _is(image, x - inner, y - inner, colour)
                assert not _is(image, x + inner, y - inner, colour)
            # Every pixel of the shape is its colour scaled by coverage: off channels stay 0.
            box = image[y - r : y + r + 1, x - r : x + r + 1].reshape(-1, 3)
            off = [c for c in range(3) if COLOURS[colour][c] == 0]
            assert box[:, off].max(initial=0) == 0
            partial = (box.max(-1) > 0) & (box.max(-1) < 255)
            assert partial.any()  # anti-aliased edge
        # Everything outside the shapes is black background.
        covered = np.zeros((32, 32), dtype=bool)
        for placed in scene:
            x, y = placed.centre
            covered[
                y - placed.radius : y + placed.radius + 1, x - placed.radius : x + placed.radius + 1
            ] = True
        assert image[~covered].max() == 0
        if len(scene) == 2:
            # Canonical order: left before right, top before bottom.
            assert [p.position for p in scene] in (["left", "right"], ["top", "bottom"])
            assert " and " in captions[0]
    assert seen_counts == {1, 2}


def test_one_shape_only():
    data = coloured_shapes(30, max_shapes=1, seed=1)
    assert all(
        len(scene) == 1 and " and " not in caps[0]
        for scene, caps in zip(data.shapes, data.captions)
    )


@pytest.mark.parametrize(
    "bad", [{"size": 0}, {"size": 2, "image_size": 8}, {"size": 2, "max_shapes": 3}]
)
def test_bad_generator_arguments(bad):
    with pytest.raises(ValueError):
        coloured_shapes(**bad)


def _save(path, colour, size=32):
    Image.fromarray(np.full((size, size, 3), colour, dtype=np.uint8)).save(path)


def test_reader_groups_captions_by_image_and_resizes(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    _save(images / "red.png", (255, 0, 0), size=64)
    _save(images / "blue.jpg", (0, 0, 255))
    captions = tmp_path / "captions.tsv"
    captions.write_text("red.png\ta red picture\n\nblue.jpg\ta blue one\nred.png\tall red\n")
    data = read_image_captions(captions, image_dir=images, image_size=16)
    assert data.names == ["red.png", "blue.jpg"]
    assert data.captions == [["a red picture", "all red"], ["a blue one"]]
    assert data.images.shape == (2, 16, 16, 3)
    np.testing.assert_array_equal(data.images[0], np.full((16, 16, 3), (255, 0, 0)))
    # JPEG is lossy: the blue square stays blue within a few levels.
    assert np.abs(data.images[1].astype(int) - np.array([0, 0, 255])).max() <= 4


def test_reader_default_folder_is_the_captions_files_own(tmp_path):
    _save(tmp_path / "a.png", (0, 255, 0))
    (tmp_path / "captions.tsv").write_text("a.png\ta green square\n")
    data = read_image_captions(tmp_path / "captions.tsv")
    assert data.captions == [["a green square"]] and int(data.images[0, 5, 5, 1]) == 255


@pytest.mark.parametrize(
    "lines, message",
    [
        (
            "a.png\tgreen\nmissing.png\tnothing here\n",
            r"captions.tsv, line 2: image .*missing.png does not exist",
        ),
        ("a.png\tgreen\na.png\t   \n", r"captions.tsv, line 2: empty caption for image 'a.png'"),
        ("bad.png\tbroken\n", r"captions.tsv, line 1: cannot read image .*bad.png"),
        ("a.png green\n", r"captions.tsv, line 1: expected 'filename<TAB>caption'"),
        ("\n\n", r"holds no captions"),
    ],
    ids=["missing-image", "empty-caption", "unreadable-image", "no-tab", "empty-file"],
)
def test_reader_errors_name_file_and_line(tmp_path, lines, message):
    _save(tmp_path / "a.png", (0, 255, 0))
    (tmp_path / "bad.png").write_bytes(b"not an image at all")
    (tmp_path / "captions.tsv").write_text(lines)
    with pytest.raises(DataError, match=message):
        read_image_captions(tmp_path / "captions.tsv")


def test_load_image_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(DataError, match="image folder"):
        read_image_captions(tmp_path / "captions.tsv", image_dir=tmp_path / "nowhere")
