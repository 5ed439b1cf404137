"""The image-classify task: splits, labels, shifts, files, config errors, recipes end to end."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from seqlab.data import DataError
from seqlab.data.tasks import digits
from seqlab.tasks.vision import read_image_labels, shift_images
from seqlab.train.config import ConfigError, load_config
from seqlab.train.run import build_task, evaluate_run, predict_run, train

TINY_VIT = ["model.d_model=8", "model.nhead=2", "model.num_layers=1"]
TRAINER = ["trainer.max_steps=2", "trainer.progress=false", "trainer.batch_size=8",
           "trainer.eval_batch_size=64"]


def _prepared(recipe, overrides=()):
    task = build_task(load_config(recipe, list(overrides)))
    task.prepare()
    return task


def test_digits_test_split_is_the_one_digits_gru_reads():
    task = _prepared("vit-digits")
    rows = digits(sequence="rows", seed=0, test_fraction=0.2)["test"]
    images, targets = task.tensors["test"]
    assert images.shape == (359, 1, 8, 8)
    torch.testing.assert_close(images[:, 0], rows[0])
    # Labels "0".."9" sort to ids 0..9, so ids equal the digits.
    assert torch.equal(targets, rows[1])
    gru = _prepared("digits-gru")
    torch.testing.assert_close(task.tensors["valid"][0][:, 0], gru.tensors["valid"][0])


@pytest.mark.parametrize("label, count", [("shape", 3), ("colour-shape", 12)])
def test_shapes_are_labelled_by_the_drawn_shape(label, count):
    from seqlab.data.images import coloured_shapes

    task = _prepared("vit-shapes", [f"data.label={label}", "data.train_size=200",
                                    "data.valid_size=5", "data.test_size=5"])
    assert len(task.labels) == count
    scenes = coloured_shapes(200, image_size=32, max_shapes=1, seed=0).shapes
    images, targets = task.tensors["train"]
    assert images.shape == (200, 3, 32, 32) and 0 <= float(images.min()) and float(images.max()) <= 1
    for scene, target in zip(scenes[:20], targets[:20]):
        name = scene[0].shape if label == "shape" else f"{scene[0].colour} {scene[0].shape}"
        assert task.labels.decode(int(target)) == name


def test_shift_moves_every_pixel_by_the_drawn_offset_and_fills_zeros():
    images = torch.arange(1.0, 2 * 3 * 5 * 5 + 1).view(2, 3, 5, 5)
    generator = torch.Generator().manual_seed(4)
    shifted = shift_images(images, 2, generator)
    dy, dx = torch.randint(0, 5, (2, 2), generator=torch.Generator().manual_seed(4)) - 2
    for n in range(2):
        # out[y, x] = in[y + dy, x + dx] where that lies inside the image, else 0.
        for y in range(5):
            for x in range(5):
                source_y, source_x = y + int(dy[n]), x + int(dx[n])
                inside = 0 <= source_y < 5 and 0 <= source_x < 5
                expected = images[n, :, source_y, source_x] if inside else torch.zeros(3)
                torch.testing.assert_close(shifted[n, :, y, x], expected)
    assert shift_images(images, 0, generator) is images


def test_training_batches_are_shifted_reproducibly_per_epoch():
    task = _prepared("vit-digits", ["data.shift=1"])
    key = task.train_batches(epoch=3, batch_size=16)[0]
    again = _prepared("vit-digits", ["data.shift=1"]).collate(key)
    torch.testing.assert_close(task.collate(key)["inputs"], again["inputs"])
    plain = _prepared("vit-digits", ["data.shift=0"])
    indices = torch.as_tensor(key[1])
    torch.testing.assert_close(plain.collate(key)["inputs"], plain.tensors["train"][0][indices])


def _write_folder(tmp_path, rows):
    for name, colour in {"r.png": (255, 0, 0), "g.png": (0, 255, 0)}.items():
        Image.fromarray(np.full((10, 10, 3), colour, dtype=np.uint8)).save(tmp_path / name)
    path = tmp_path / "labels.tsv"
    path.write_text("".join(row + "\n" for row in rows))
    return path


def test_image_folder_with_a_labels_file(tmp_path):
    path = _write_folder(tmp_path, ["r.png\tred", "", "g.png\tgreen", "r.png\tred"])
    images, labels = read_image_labels(path, image_size=8)
    assert images.shape == (3, 8, 8, 3) and labels == ["red", "green", "red"]
    assert tuple(images[1, 4, 4]) == (0, 255, 0)
    bad = _write_folder(tmp_path, ["r.png red"])
    with pytest.raises(DataError, match="line 1: expected 'filename<TAB>label', found no tab"):
        read_image_labels(bad)
    empty = _write_folder(tmp_path, ["r.png\t"])
    with pytest.raises(DataError, match="line 1: empty label"):
        read_image_labels(empty)
    missing = _write_folder(tmp_path, ["nope.png\tred"])
    with pytest.raises(DataError, match="line 1: image .*nope.png does not exist"):
        read_image_labels(missing)


def test_a_validation_label_unseen_in_training_is_named(tmp_path):
    train_file = _write_folder(tmp_path, ["r.png\tred", "g.png\tgreen"])
    valid_file = tmp_path / "valid.tsv"
    valid_file.write_text("r.png\tblue\n")
    config = load_config("vit-shapes", ["data.corpus=files", f"data.train={train_file}",
                                        f"data.valid={valid_file}", "data.image_size=8"])
    with pytest.raises(DataError, match="valid images have label 'blue'.*known labels: green, red"):
        build_task(config).prepare()


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="model.channels=.*only applies to model.family=cnn"):
        load_config("vit-digits", ["model.channels=[8]"])
    with pytest.raises(ConfigError, match="model.patch_size=4 only applies to model.family=vit"):
        load_config("cnn-digits", ["model.patch_size=4"])
    with pytest.raises(ConfigError, match="d_model=10 should be divisible by model.nhead=4"):
        load_config("vit-digits", ["model.d_model=10"])
    with pytest.raises(ConfigError, match="data.train"):
        build_task(load_config("vit-shapes", ["data.corpus=files"])).prepare()


@pytest.mark.slow
@pytest.mark.parametrize("recipe, overrides", [
    ("vit-digits", TINY_VIT),
    ("cnn-digits", ["model.channels=[4]"]),
    ("vit-shapes", TINY_VIT + ["data.train_size=40", "data.valid_size=8", "data.test_size=8"]),
    ("cnn-shapes", ["model.channels=[4,4]", "data.train_size=40", "data.valid_size=8",
                    "data.test_size=8"]),
])
def test_recipe_trains_evaluates_and_classifies_a_picture(tmp_path, recipe, overrides):
    result = train(load_config(recipe, overrides + TRAINER), tmp_path / "run")
    assert result.fit.step == 2
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert set(summary["test"]) == {"loss", "accuracy"}
    assert evaluate_run(tmp_path / "run")["test"] == pytest.approx(summary["test"], rel=1e-6)
    labels = json.loads((tmp_path / "run" / "labels.json").read_text())["labels"]
    picture = tmp_path / "picture.png"
    Image.fromarray(np.full((16, 16, 3), 200, dtype=np.uint8)).save(picture)
    lines = predict_run(tmp_path / "run", [str(picture), str(picture)])
    label, probability = lines[0].split("\t")
    assert lines[0] == lines[1] and label in labels and 0 < float(probability) <= 1


def test_a_digit_picture_reads_back_as_the_data_stores_it(tmp_path):
    task = _prepared("vit-digits")
    digit = task.tensors["test"][0][0, 0]  # (8, 8) ink bright, in [0, 1]
    pixels = np.rint(digit.numpy() * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "ink-bright.png")
    Image.fromarray(255 - pixels).save(tmp_path / "ink-dark.png")  # dark ink on a light page
    # Drawn large: each data pixel a 6x6 block, 48x48 in all; the 8x8 cells average the blocks.
    Image.fromarray(np.kron(255 - pixels, np.ones((6, 6), dtype=np.uint8))).save(tmp_path / "big.png")
    names = ["ink-bright.png", "ink-dark.png", "big.png"]
    loaded = task.load_pictures([str(tmp_path / name) for name in names])
    assert loaded.shape == (3, 1, 8, 8)
    for picture in loaded:
        torch.testing.assert_close(picture[0], digit, atol=1 / 255, rtol=0)
