"""Video-caption task: metrics equal the per-clip computation, motion accuracy by hand, clip
files, the still-frame baseline, config errors, and the recipe end to end (slow)."""

import json

import numpy as np
import pytest
import torch

from seqlab.data import DataError
from seqlab.data.video import moving_shapes
from seqlab.decode import bleu, exact_match, greedy_decode
from seqlab.tasks.video_caption import motion_accuracy
from seqlab.train.config import ConfigError, load_config
from seqlab.train.run import build_task, evaluate_run, predict_run, train

SMALL = [
    "data.train_size=16",
    "data.valid_size=5",
    "data.test_size=4",
    "data.min_frames=3",
    "data.max_frames=5",
    "model.channels=[4,4]",
    "model.hidden_size=6",
    "model.encoder_hidden_size=4",
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


def _prepared(overrides):
    config = load_config("video-caption-gru", SMALL + overrides)
    task = build_task(config)
    task.prepare()
    torch.manual_seed(0)
    return task, task.build_model().eval()


def test_motion_accuracy_worked_example():
    hypotheses = [
        "a red circle moves left and a blue square shrinks",  # 1 of 2 right
        "a green triangle grows",  # 1 of 1 right, though its colour is wrong
        "a red circle stays",  # second shape missing: 1 of 2
    ]
    references = [
        ["a red circle moves left and a blue square grows"],
        ["a blue triangle grows"],
        ["a red circle stays and a red square moves up"],
    ]
    assert motion_accuracy(hypotheses, references) == pytest.approx(3 / 5)


def test_metrics_equal_one_clip_at_a_time():
    task, model = _prepared([])
    metrics = task.evaluate(model, "valid", batch_size=2, device=torch.device("cpu"))
    tokenizer = task.tokenizer
    total, count, hypotheses = 0.0, 0, []
    clips = moving_shapes(5, min_frames=3, max_frames=5, seed=1).clips  # the valid split
    for clip, captions in zip(clips, task.references["valid"]):
        frames = torch.from_numpy(clip).permute(0, 3, 1, 2).float()[None] / 255  # (1, F, 3, P, P)
        lengths = torch.tensor([len(clip)])
        ids = torch.tensor([tokenizer.encode(captions[0], add_bos=True, add_eos=True)])
        with torch.no_grad():
            log_probs = model(frames, lengths, ids).logits.log_softmax(-1)[0]  # (T-1, V)
        total -= float(log_probs.gather(1, ids[0, 1:, None]).sum())
        count += ids.size(1) - 1
        ((tokens, _),) = greedy_decode(
            model, frames, lengths, tokenizer.bos_id, tokenizer.eos_id, max_length=8
        )
        hypotheses.append(tokenizer.decode(tokens))
    references = [captions[0] for captions in task.references["valid"]]
    assert metrics["loss"] == pytest.approx(total / count, rel=1e-5)
    assert metrics["bleu"] == pytest.approx(bleu(hypotheses, references))
    assert metrics["exact_match"] == pytest.approx(exact_match(hypotheses, references))
    assert metrics["motion_accuracy"] == pytest.approx(
        motion_accuracy(hypotheses, [[r] for r in references])
    )


@pytest.mark.parametrize(("frames", "index"), [("first", 0), ("middle", None)])
def test_still_frame_baseline_keeps_one_frame_of_each_clip(frames, index):
    task, _ = _prepared([f"data.frames={frames}"])
    clips = moving_shapes(5, min_frames=3, max_frames=5, seed=1).clips
    kept = task.images["valid"]
    assert kept.lengths.tolist() == [1] * 5
    for n, clip in enumerate(clips):
        frame = (len(clip) - 1) // 2 if index is None else index
        np.testing.assert_array_equal(kept.frames[n, 0].numpy(), clip[frame])


def _clip_files(tmp_path):
    data = moving_shapes(8, min_frames=3, max_frames=5, seed=5)
    lines = []
    for n, clip in enumerate(data.clips):
        np.save(tmp_path / f"clip{n}.npy", clip)
        lines.append(f"clip{n}.npy\t{data.captions[n][0]}")
    (tmp_path / "captions.tsv").write_text("\n".join(lines) + "\n")
    return data


def test_clip_files_split_and_pad(tmp_path):
    data = _clip_files(tmp_path)
    task, model = _prepared(
        ["data.corpus=files", f"data.train={tmp_path / 'captions.tsv'}", "data.valid_fraction=0.25"]
    )
    assert (len(task.images["train"]), len(task.images["valid"])) == (6, 2)
    clips = task.images["train"]
    longest = max(len(c) for c in data.clips)
    assert clips.frames.shape[1] <= longest
    batch = task.collate([0, 1, 2])
    # Each batch is padded to its own longest clip, and the lengths say where each clip ends.
    assert batch["clips"].shape[1] == int(batch["lengths"].max())
    metrics = task.evaluate(model, "valid", batch_size=4, device=torch.device("cpu"))
    assert "motion_accuracy" not in metrics and 0.0 <= metrics["exact_match"] <= 1.0


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="data.train=PATH"):
        _prepared(["data.corpus=files"])
    with pytest.raises(ConfigError, match="model.encoder=lstm needs model.cell=lstm"):
        load_config("video-caption-gru", ["model.encoder=lstm"]).section("model")
    with pytest.raises(ConfigError, match="bidirectional=true applies to a recurrent encoder"):
        load_config(
            "video-caption-gru", ["model.encoder=transformer", "model.bidirectional=true"]
        ).section("model")
    with pytest.raises(ConfigError, match="min_frames"):
        load_config("video-caption-gru", ["data.min_frames=9", "data.max_frames=8"]).section("data")
    # A bidirectional recurrent encoder is fine (unlike the image captioner's decoder-only model).
    load_config("video-caption-gru", ["model.bidirectional=true"]).section("model")


@pytest.mark.slow
@pytest.mark.parametrize(("encoder", "memory"), [("gru", "regions"), ("transformer", "frames")])
def test_recipe_trains_evaluates_and_captions_clip_files(tmp_path, encoder, memory):
    overrides = [f"model.encoder={encoder}", f"model.memory={memory}", "model.nhead=2"]
    config = load_config("video-caption-gru", SMALL + TRAINER + overrides)
    result = train(config, tmp_path / "run")
    assert result.fit.step == 2
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert set(summary["valid"]) == {"loss", "perplexity", "bleu", "exact_match", "motion_accuracy"}
    assert evaluate_run(tmp_path / "run")["valid"] == pytest.approx(summary["valid"], rel=1e-6)
    clip = moving_shapes(1, seed=9).clips[0]
    np.save(tmp_path / "clip.npy", clip)
    folder = tmp_path / "frames"
    folder.mkdir()
    from PIL import Image

    for t, frame in enumerate(clip):
        Image.fromarray(frame).save(folder / f"{t:03d}.png")
    outputs = predict_run(tmp_path / "run", [str(tmp_path / "clip.npy"), str(folder)])
    assert len(outputs) == 2 and outputs[0] == outputs[1]
    with pytest.raises(DataError, match="input 1: clip .*nope.npy does not exist"):
        predict_run(tmp_path / "run", [str(tmp_path / "nope.npy")])
