"""Generated clips: reproducible, captions say what moves where (checked on the pixels); the
clip-folder reader and its errors."""

import numpy as np
import pytest
from PIL import Image

from seqlab.data import DataError
from seqlab.data.video import (
    MOTIONS,
    load_clip,
    motions_of,
    moving_shapes,
    read_video_captions,
    video_caption_of,
)

P = 32
TRAVEL = 6  # round(3 * 32 / 16) pixels over the clip
SMALL, LARGE = 2, 5  # radii of a growing / shrinking shape: 32 / 16 and 5 * 32 / 32


def test_same_seed_same_clips_and_captions():
    first, again = moving_shapes(15, seed=3), moving_shapes(15, seed=3)
    other = moving_shapes(15, seed=4)
    assert first.captions == again.captions
    for a, b in zip(first.clips, again.clips):
        np.testing.assert_array_equal(a, b)
    assert [len(c) for c in first.clips] != [len(c) for c in other.clips] or any(
        not np.array_equal(a, b) for a, b in zip(first.clips, other.clips)
    )
    lengths = {len(clip) for clip in moving_shapes(200, seed=0).clips}
    assert lengths == set(range(8, 13))  # min_frames..max_frames
    assert first.clips[0].dtype == np.uint8 and first.clips[0].shape[1:] == (P, P, 3)


def _half(half):
    """Rows and columns of the frame a shape in `half` lives in."""
    whole, low, high = slice(0, P), slice(0, P // 2), slice(P // 2, P)
    return {
        "whole": (whole, whole),
        "left": (whole, low),
        "right": (whole, high),
        "top": (low, whole),
        "bottom": (high, whole),
    }[half]


def _centroids_and_areas(clip, half):
    """Per frame: the centroid (x, y) of the lit pixels in the shape's half, weighted by
    brightness, and their total coverage (in pixels)."""
    rows, columns = _half(half)
    centroids, areas = [], []
    for frame in clip:
        weight = frame[rows, columns].max(axis=-1).astype(np.float64) / 255  # (h, w)
        ys, xs = np.mgrid[rows, columns]
        total = weight.sum()
        centroids.append(((weight * xs).sum() / total, (weight * ys).sum() / total))
        areas.append(total)
    return np.array(centroids), np.array(areas)  # (T, 2), (T,)


def _box_centre(frame, half):
    """Centre (x, y) of the box around the lit pixels in the shape's half."""
    rows, columns = _half(half)
    ys, xs = np.nonzero(frame[rows, columns].max(axis=-1))
    return (xs.min() + xs.max()) / 2 + columns.start, (ys.min() + ys.max()) / 2 + rows.start


def test_captions_match_the_motion_seen_in_the_pixels():
    data = moving_shapes(300, image_size=P, seed=0)
    seen = set()
    for clip, captions, scene in zip(data.clips, data.captions, data.shapes):
        assert captions == [video_caption_of(scene)]
        assert motions_of(captions[0]) == [moving.motion for moving in scene]
        # Two shapes are named in reading order: left before right, top before bottom.
        assert [m.half for m in scene] in (["whole"], ["left", "right"], ["top", "bottom"])
        for moving in scene:
            seen.add(moving.motion)
            if len(scene) == 2:
                # The other half holds only the other shape: this one never leaves its half.
                other = next(m for m in scene if m is not moving)
                assert other.half != moving.half
            centroids, areas = _centroids_and_areas(clip, moving.half)
            dx, dy = centroids[-1] - centroids[0]
            growth = areas[-1] / areas[0]
            if moving.motion.startswith("moves"):
                direction = moving.motion.split()[1]
                along, across = (dx, dy) if direction in ("left", "right") else (dy, dx)
                sign = 1 if direction in ("right", "down") else -1
                assert sign * along == pytest.approx(TRAVEL, abs=0.3)
                assert abs(across) < 0.3 and growth == pytest.approx(1, abs=0.05)
                # Steady: the centroid moves the same way from frame to frame, never back.
                steps = np.diff(centroids[:, 0 if direction in ("left", "right") else 1])
                assert bool((sign * steps > -0.05).all())
            elif moving.motion in ("grows", "shrinks"):
                # A triangle's centroid sits below its centre, so compare the lit boxes' centres.
                assert _box_centre(clip[0], moving.half) == _box_centre(clip[-1], moving.half)
                expected = (LARGE / SMALL) ** 2  # area grows with the radius squared
                if moving.motion == "grows":
                    assert growth > expected / 2
                else:
                    assert growth < 2 / expected
            else:
                assert moving.motion == "stays"
                assert abs(dx) < 1e-9 and abs(dy) < 1e-9
                np.testing.assert_array_equal(areas, areas[0])
    assert seen == set(MOTIONS)


def test_motions_of_a_caption():
    assert motions_of("a red circle moves left and a blue square stays") == [
        "moves left",
        "stays",
    ]
    assert motions_of("a red circle") == [""]
    assert motions_of("") == []


def test_bad_generator_arguments():
    with pytest.raises(ValueError, match="min_frames"):
        moving_shapes(3, min_frames=5, max_frames=4)
    with pytest.raises(ValueError, match="max_shapes"):
        moving_shapes(3, max_shapes=3)
    with pytest.raises(ValueError, match="image_size"):
        moving_shapes(3, image_size=8)


def _save_folder(folder, clip):
    folder.mkdir()
    for t, frame in enumerate(clip):
        Image.fromarray(frame).save(folder / f"frame{t}.png")  # frame10 sorts after frame9


def test_reader_takes_arrays_and_frame_folders(tmp_path):
    data = moving_shapes(3, min_frames=11, max_frames=11, seed=1)
    np.save(tmp_path / "a.npy", data.clips[0])
    np.save(tmp_path / "b.npy", data.clips[1].astype(np.float32) / 255)  # floats in [0, 1]
    _save_folder(tmp_path / "c", data.clips[2])
    (tmp_path / "captions.tsv").write_text(
        f"a.npy\t{data.captions[0][0]}\nb.npy\t{data.captions[1][0]}\n\n"
        f"c\t{data.captions[2][0]}\na.npy\tsomething else\n"
    )
    read = read_video_captions(tmp_path / "captions.tsv")
    assert read.names == ["a.npy", "b.npy", "c"]
    assert read.captions[0] == [data.captions[0][0], "something else"]
    for got, expected in zip(read.clips, data.clips):
        np.testing.assert_array_equal(got, expected)
    # Frames of another size are resized, like images.
    small = load_clip(tmp_path / "a.npy", image_size=16)
    assert small.shape == (11, 16, 16, 3)
    expected = np.asarray(Image.fromarray(data.clips[0][4]).resize((16, 16), Image.BILINEAR))
    np.testing.assert_array_equal(small[4], expected)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.npy", None, "line 1: clip .*missing.npy does not exist"),
        ("gray.npy", np.zeros((4, 32, 32), np.uint8), r"shape \(4, 32, 32\); expected \(T, H, W, 3\)"),
        ("empty.npy", np.zeros((0, 32, 32, 3), np.uint8), "has no frames"),
        ("bright.npy", np.full((2, 8, 8, 3), 2.0), r"floats outside \[0, 1\]"),
        ("ints.npy", np.zeros((2, 8, 8, 3), np.int64), "dtype int64"),
        ("clip.gif", b"GIF89a", "neither a .npy array nor a folder"),
        ("broken.npy", b"not numpy", "cannot read clip"),
        ("folder", "dir", "holds no frame images"),
    ],
)
def test_reader_errors_name_the_file_and_line(tmp_path, name, content, message):
    path = tmp_path / name
    if isinstance(content, np.ndarray):
        np.save(path, content)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "dir":
        path.mkdir()
        (path / "notes.txt").write_text("no frames here")
    (tmp_path / "captions.tsv").write_text(f"{name}\ta red circle stays\n")
    with pytest.raises(DataError, match=f"captions.tsv, {message}" if "line" in message else message):
        read_video_captions(tmp_path / "captions.tsv")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a.npy a red circle stays\n", "line 1: expected 'clip<TAB>caption', found no tab"),
        ("a.npy\t  \n", "line 1: empty caption for clip 'a.npy'"),
        ("\n\n", "holds no captions"),
        ("\ta red circle stays\n", "line 1: empty clip name"),
    ],
)
def test_captions_file_errors(tmp_path, text, message):
    np.save(tmp_path / "a.npy", np.zeros((2, 32, 32, 3), np.uint8))
    (tmp_path / "captions.tsv").write_text(text)
    with pytest.raises(DataError, match=message):
        read_video_captions(tmp_path / "captions.tsv")
    with pytest.raises(DataError, match="clip folder .*nowhere does not exist"):
        read_video_captions(tmp_path / "captions.tsv", clip_dir=tmp_path / "nowhere")
