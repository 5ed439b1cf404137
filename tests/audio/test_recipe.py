"""The asr recipes end to end on a tiny spoken corpus; the task's data options and errors."""

import json
import math
import shutil

import numpy as np
import pytest

soundfile = pytest.importorskip("soundfile", reason="audio tests need soundfile (pip install 'seqlab[audio]')")
pytest.importorskip("jiwer", reason="WER / CER need jiwer (pip install 'seqlab[audio]')")

from seqlab.data.readers import DataError
from seqlab.train.config import ConfigError, load_config
from seqlab.train.run import build_task, evaluate_run, predict_run, train

TINY_LAS = ["model.encoder_hidden_size=8", "model.hidden_size=8", "model.embedding_dim=4"]
TINY_TRANSFORMER = ["model.d_model=16", "model.nhead=2", "model.num_encoder_layers=1",
                    "model.num_decoder_layers=1"]
TRAINER = ["trainer.max_steps=2", "trainer.progress=false", "trainer.batch_size=4",
           "trainer.eval_every=2", "predict.max_length=10", "predict.num_examples=1",
           "predict.beam_size=2"]


def _tone(freq, seconds, rate=16000):
    return 0.3 * np.sin(2 * math.pi * freq * np.arange(int(rate * seconds)) / rate)


def _user_corpus(folder, transcripts):
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for n, text in enumerate(transcripts):
        soundfile.write(str(folder / f"{n}.wav"), _tone(200 + 50 * n, 0.3 + 0.05 * n), 16000)
        rows.append(f"{n}.wav\t{text}")
    (folder / "transcripts.tsv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("recipe, tiny", [("asr-las", TINY_LAS), ("asr-transformer", TINY_TRANSFORMER)])
def test_recipe_generates_trains_evaluates_and_transcribes(tmp_path, recipe, tiny):
    if shutil.which("espeak-ng") is None:
        pytest.skip("the generated corpus needs espeak-ng: apt-get install -y espeak-ng")
    overrides = [f"data.cache_dir={tmp_path / 'cache'}", "data.generate_size=8",
                 "data.generate_eval_size=3"]
    result = train(load_config(recipe, overrides + tiny + TRAINER), tmp_path / "run")
    assert result.fit.step == 2
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert set(summary["test"]) == {"loss", "perplexity", "wer", "cer", "exact_match"}
    assert evaluate_run(tmp_path / "run")["test"] == pytest.approx(summary["test"], rel=1e-6)
    corpus = next((tmp_path / "cache").iterdir())
    assert len(list((corpus / "test").glob("*.wav"))) == 3
    wav = str(corpus / "test" / "00000.wav")
    outputs = predict_run(tmp_path / "run", [wav, wav])
    assert len(outputs) == 2 and outputs[0] == outputs[1]


def test_user_folders_train_and_predict_any_rate(tmp_path):
    train_dir = _user_corpus(tmp_path / "train", ["one two", "three", "Four, five!", "six"])
    valid_dir = _user_corpus(tmp_path / "valid", ["one", "two"])
    config = load_config("asr-las", [f"data.train={train_dir}", f"data.valid={valid_dir}"] + TINY_LAS + TRAINER)
    result = train(config, tmp_path / "run")
    assert result.fit.step == 2
    task = build_task(config)
    task.prepare()
    # Transcripts are normalised: lower case, no punctuation; characters form the vocabulary.
    assert task.references["train"][2] == "four five"
    assert set("onetwhrfivsx ") <= set(task.tokenizer.get_vocab())
    slow = tmp_path / "other-rate.wav"
    soundfile.write(str(slow), _tone(300, 0.4, 22050), 22050)
    assert len(predict_run(tmp_path / "run", [str(slow)])) == 1
    with pytest.raises(ValueError, match="sample rate 22050 Hz but 16000 Hz"):
        predict_run(tmp_path / "run", [str(slow)], ["data.resample=false"])
    with pytest.raises(DataError, match="not a readable audio file"):
        predict_run(tmp_path / "run", [str(tmp_path / "train" / "transcripts.tsv")])


def test_transcript_empty_after_normalisation_is_an_error(tmp_path):
    folder = _user_corpus(tmp_path / "data", ["one", "?!"])
    task = build_task(load_config("asr-las", [f"data.train={folder}", f"data.valid={folder}"]))
    with pytest.raises(DataError, match="1.wav: its transcript is empty after normalisation"):
        task.prepare()


def test_keys_of_the_other_family_are_refused():
    with pytest.raises(ConfigError, match="model.d_model does not apply to model.family=las"):
        load_config("asr-las", ["model.d_model=64"])
    with pytest.raises(ConfigError, match="model.hidden_size does not apply to model.family=transformer"):
        load_config("asr-transformer", ["model.hidden_size=64"])
