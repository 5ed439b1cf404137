"""Reading audio and transcripts: mono mix-down, rates, the TSV layouts, and clear errors."""

import math

import numpy as np
import pytest
import torch

soundfile = pytest.importorskip("soundfile", reason="audio tests need soundfile (pip install 'seqlab[audio]')")

from seqlab.data.audio import load_audio
from seqlab.data.readers import DataError
from seqlab.data.speech import (
    HELD_OUT,
    TRAINING,
    add_noise,
    caption_sentences,
    draw_conditions,
    normalize_transcript,
    number_sentences,
    read_transcripts,
)


def _write(path, data, rate):
    soundfile.write(str(path), np.asarray(data, dtype=np.float32), rate)
    return path


def _tone(freq, rate, seconds=0.5):
    return np.sin(2 * math.pi * freq * np.arange(int(rate * seconds)) / rate)


def test_stereo_is_mixed_down_and_flac_reads(tmp_path):
    left, right = 0.5 * _tone(300, 16000), 0.25 * _tone(300, 16000)
    wav = _write(tmp_path / "a.wav", np.stack([left, right], axis=1), 16000)
    flac = _write(tmp_path / "a.flac", left, 16000)
    mono = load_audio(wav)
    assert mono.shape == (8000,)
    np.testing.assert_allclose(mono.numpy(), (left + right) / 2, atol=1e-4)  # 16-bit PCM
    np.testing.assert_allclose(load_audio(flac).numpy(), left, atol=1e-4)


def test_other_rates_are_resampled_or_refused_clearly(tmp_path):
    path = _write(tmp_path / "slow.wav", 0.5 * _tone(440, 22050), 22050)
    waveform = load_audio(path, 16000)
    assert waveform.shape == (8000,)
    spectrum = np.abs(np.fft.rfft(waveform.numpy() * np.hanning(8000)))
    assert int(spectrum.argmax()) == 220  # 0.5 s: bin k is 2k Hz, so 440 Hz is bin 220
    with pytest.raises(ValueError, match=r"sample rate 22050 Hz but 16000 Hz.*data.resample=true"):
        load_audio(path, 16000, resample_audio=False)


def test_unreadable_missing_and_empty_audio_are_data_errors(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_text("this is not audio")
    with pytest.raises(DataError, match="bad.wav: not a readable audio file"):
        load_audio(bad)
    with pytest.raises(DataError, match="does not exist"):
        load_audio(tmp_path / "none.wav")
    empty = _write(tmp_path / "empty.wav", np.zeros(0), 16000)
    with pytest.raises(DataError, match="holds no samples"):
        load_audio(empty)


def _corpus(tmp_path, text):
    for name in ("a.wav", "b.wav"):
        _write(tmp_path / name, 0.1 * _tone(200, 16000), 16000)
    tsv = tmp_path / "transcripts.tsv"
    tsv.write_text(text, encoding="utf-8")
    return tsv


def test_reader_without_header_with_blank_lines(tmp_path):
    tsv = _corpus(tmp_path, "a.wav\tHello world\n\nb.wav\tsecond one\n")
    rows = read_transcripts(tmp_path)  # the folder's transcripts.tsv
    assert [(r.audio.name, r.transcript) for r in rows] == [("a.wav", "Hello world"), ("b.wav", "second one")]
    assert rows[0].audio == tmp_path / "a.wav"
    assert read_transcripts(tsv) == rows


def test_reader_uses_named_columns_of_a_header(tmp_path):
    # Common Voice's layout: client_id, path, sentence, ... in any order.
    _corpus(tmp_path, "client_id\tpath\tsentence\tup_votes\nx\ta.wav\tfirst\t2\ny\tb.wav\tsecond\t0\n")
    rows = read_transcripts(tmp_path / "transcripts.tsv")
    assert [(r.audio.name, r.transcript) for r in rows] == [("a.wav", "first"), ("b.wav", "second")]


def test_reader_takes_absolute_paths(tmp_path):
    other = tmp_path / "elsewhere"
    other.mkdir()
    _corpus(other, "")
    tsv = tmp_path / "list.tsv"
    tsv.write_text(f"audio\ttranscript\n{other / 'a.wav'}\tabsolute\n")
    assert read_transcripts(tsv)[0].audio == other / "a.wav"


@pytest.mark.parametrize(
    "text, message",
    [
        ("a.wav\t  \n", r"line 1: empty transcript for 'a.wav'"),
        ("a.wav\tfine\nb.wav\n", r"line 2: expected audio<TAB>transcript"),
        ("a.wav\tfine\nmissing.wav\tgone\n", r"line 2: audio file .*missing.wav does not exist"),
        ("audio\ttranscript\n\n", r"holds no audio<TAB>transcript rows"),
    ],
)
def test_reader_errors_name_file_and_line(tmp_path, text, message):
    _corpus(tmp_path, text)
    with pytest.raises(DataError, match=message):
        read_transcripts(tmp_path)


def test_reader_missing_file(tmp_path):
    with pytest.raises(DataError, match="transcripts.tsv does not exist"):
        read_transcripts(tmp_path)


def test_noise_has_the_asked_signal_to_noise_ratio():
    signal = torch.from_numpy(_tone(300, 16000, 4.0)).float()
    for snr in (20.0, 10.0):
        noisy = add_noise(signal, snr, torch.Generator().manual_seed(0))
        noise = noisy - signal
        measured = 10 * math.log10(float(signal.pow(2).mean() / noise.pow(2).mean()))
        assert measured == pytest.approx(snr, abs=0.1)


def test_sentences_and_conditions_are_seeded_and_held_out():
    numbers = number_sentences(50, seed=1)
    assert numbers == number_sentences(50, seed=1) and numbers != number_sentences(50, seed=2)
    assert all(3 <= len(s.split()) <= 6 for s in numbers)
    grammar = caption_sentences(5, seed=0, multi30k=None)
    assert all(s.split()[0] in ("a", "an", "two") for s in grammar)
    train = {(c.voice.split("+")[0], c.voice.split("+")[1], c.speed) for c in draw_conditions(TRAINING, 300, 0)}
    test = {(c.voice.split("+")[0], c.voice.split("+")[1], c.speed) for c in draw_conditions(HELD_OUT, 300, 0)}
    for part in range(3):  # no voice, variant or speed of the test side is ever trained on
        assert not {t[part] for t in train} & {t[part] for t in test}


def test_normalize_transcript():
    assert normalize_transcript("  A dog, RUNNING.\tfast ") == "a dog running fast"
    assert normalize_transcript("It's 3 o'clock!") == "it's 3 o'clock"
