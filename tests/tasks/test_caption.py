"""Caption task: recipe end to end, metrics equal the per-image computation, image-folder data."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from seqlab.data import DataError, coloured_shapes
from seqlab.decode import bleu, exact_match, greedy_decode
from seqlab.train.config import ConfigError, load_config
from seqlab.train.run import build_task, evaluate_run, predict_run, train

SMALL = [
    "data.train_size=24",
    "data.valid_size=6",
    "data.test_size=5",
    "model.channels=[4,4]",
    "model.hidden_size=6",
    "model.embedding_dim=4",
    "model.attention_size=5",
    "predict.max_length=8",
    "predict.num_examples=2",
]
TRAINER = [
    "trainer.max_steps=2",
    "trainer.progress=false",
    "trainer.batch_size=4",
    "trainer.eval_batch_size=4",
]


def _write_png(path, image):
    Image.fromarray(image).save(path)
    return path


def test_recipe_trains_evaluates_and_captions_an_image_file(tmp_path):
    config = load_config("caption-gru", SMALL + TRAINER)
    result = train(config, tmp_path / "run")
    assert result.fit.step == 2
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert set(summary["valid"]) == {"loss", "perplexity", "bleu", "exact_match"}
    assert evaluate_run(tmp_path / "run")["valid"] == pytest.approx(summary["valid"], rel=1e-6)
    picture = _write_png(tmp_path / "picture.png", coloured_shapes(1, seed=9).images[0])
    outputs = predict_run(tmp_path / "run", [str(picture), str(picture)])
    assert len(outputs) == 2 and outputs[0] == outputs[1]
    with pytest.raises(DataError, match="input 1: image .*nope.png does not exist"):
        predict_run(tmp_path / "run", [str(tmp_path / "nope.png")])


def _prepared(overrides):
    config = load_config("caption-gru", SMALL + overrides)
    task = build_task(config)
    task.prepare()
    torch.manual_seed(0)
    return task, task.build_model().eval()


def test_metrics_equal_one_image_at_a_time():
    task, model = _prepared([])
    metrics = task.evaluate(model, "valid", batch_size=4, device=torch.device("cpu"))
    tokenizer = task.tokenizer
    total, count, hypotheses = 0.0, 0, []
    for n, captions in enumerate(task.references["valid"]):
        image = task.images["valid"][n : n + 1]  # (1, 3, P, P)
        (caption,) = captions
        ids = torch.tensor([tokenizer.encode(caption, add_bos=True, add_eos=True)])
        with torch.no_grad():
            log_probs = model(image, ids).logits.log_softmax(-1)[0]  # (T-1, V)
        total -= float(log_probs.gather(1, ids[0, 1:, None]).sum())
        count += ids.size(1) - 1
        ((tokens, _),) = greedy_decode(
            model,
            image,
            torch.ones(1, dtype=torch.long),
            tokenizer.bos_id,
            tokenizer.eos_id,
            max_length=8,
        )
        hypotheses.append(tokenizer.decode(tokens))
    references = [captions[0] for captions in task.references["valid"]]
    assert metrics["loss"] == pytest.approx(total / count, rel=1e-5)
    assert metrics["bleu"] == pytest.approx(bleu(hypotheses, references))
    assert metrics["exact_match"] == pytest.approx(exact_match(hypotheses, references))


def _image_folder(tmp_path):
    data = coloured_shapes(12, seed=5)
    lines = []
    for n, image in enumerate(data.images):
        _write_png(tmp_path / f"img{n}.png", image)
        lines.append(f"img{n}.png\t{data.captions[n][0]}")
        if n % 3 == 0:  # some images get a second, different caption
            lines.append(f"img{n}.png\ta picture number {n}")
    captions = tmp_path / "captions.tsv"
    captions.write_text("\n".join(lines) + "\n")
    return captions


def test_image_folder_with_several_captions_per_image(tmp_path):
    captions = _image_folder(tmp_path)
    task, model = _prepared(
        ["data.corpus=files", f"data.train={captions}", "data.valid_fraction=0.25"]
    )
    train_images, valid_images = task.images["train"].size(0), task.images["valid"].size(0)
    assert (train_images, valid_images) == (9, 3)
    # One training example per caption line, each pointing at its image.
    assert len(task.examples["train"]) + len(task.examples["valid"]) == 12 + 4
    assert max(len(refs) for refs in task.references["train"] + task.references["valid"]) == 2
    pixels = np.asarray(Image.open(tmp_path / "img0.png"), dtype=np.float32) / 255
    index = next(
        (split, n)
        for split in ("train", "valid")
        for n, refs in enumerate(task.references[split])
        if "a picture number 0" in refs
    )
    torch.testing.assert_close(
        task.images[index[0]][index[1]], torch.from_numpy(pixels).permute(2, 0, 1)
    )
    metrics = task.evaluate(model, "train", batch_size=4, device=torch.device("cpu"))
    assert 0.0 <= metrics["exact_match"] <= 1.0 and metrics["loss"] > 0


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="data.train=PATH"):
        _prepared(["data.corpus=files"])
    with pytest.raises(ConfigError, match="bidirectional"):
        load_config("caption-gru", ["model.bidirectional=true"]).section("model")
    with pytest.raises(ConfigError, match="attention"):
        load_config("caption-gru", ["model.attention=luong"]).section("model")
