"""Speech corpora: a generator that speaks sentences with espeak-ng, and a transcript reader.

Generated data (no download): ``python -m seqlab.data.speech --out DIR`` speaks sentences with
Debian's ``espeak-ng`` synthesiser (``apt-get install espeak-ng``) across voices (accents),
voice variants (timbres), speeds (words per minute) and pitches, optionally with white noise at a
given signal-to-noise ratio, and writes the common corpus layout::

    DIR/train/00000.wav ...   DIR/train/transcripts.tsv   (audio<TAB>transcript<TAB>voice ...)
    DIR/valid/...             the training conditions, other sentences
    DIR/test/...              held-out conditions: voices, variants and speeds never trained on

so the test split measures generalisation to unseen speakers and speaking rates. The sentences
are number strings (``--kind numbers``: "three one four one five") or short caption-like
sentences (``--kind captions``: the English side of Multi30k when ``../shared/data/multi30k``
is present, else a small built-in grammar: "a dog runs on the beach").

User data (:func:`read_transcripts`): a TSV file, or a folder holding ``transcripts.tsv``, with
rows ``audio<TAB>transcript``, audio paths relative to the TSV's folder. A header row is
optional; when there is one, the columns named ``audio`` / ``path`` / ``file`` and
``transcript`` / ``sentence`` / ``text`` are used and the others ignored (Common Voice's
``path`` / ``sentence`` layout reads as is).
"""

from __future__ import annotations

import argparse
import io
import random
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from seqlab.data.readers import DataError, numbered_lines, open_text

__all__ = [
    "DIGITS",
    "HELD_OUT",
    "TRAINING",
    "Condition",
    "Conditions",
    "Utterance",
    "add_noise",
    "caption_sentences",
    "draw_conditions",
    "generate_corpus",
    "normalize_transcript",
    "number_sentences",
    "read_transcripts",
    "speak",
]

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@dataclass(frozen=True)
class Conditions:
    """The speakers and rates of one side of the split: espeak-ng voices, variants, speeds."""

    voices: tuple[str, ...]
    variants: tuple[str, ...]
    speeds: tuple[int, ...]
    pitch_range: tuple[int, int] = (30, 70)


# Training and held-out conditions share no voice (accent), no variant (timbre), no speed.
TRAINING = Conditions(
    voices=("en-us", "en-gb", "en-gb-x-rp", "en-gb-x-gbclan", "en-029"),
    variants=("m1", "m2", "m3", "m4", "f1", "f2", "f3"),
    speeds=(130, 140, 160, 170, 190, 200),
)
HELD_OUT = Conditions(
    voices=("en-gb-scotland", "en-us-nyc", "en-gb-x-gbcwmd"),
    variants=("m5", "m6", "f4"),
    speeds=(150, 180),
)


@dataclass(frozen=True)
class Condition:
    """How one utterance is spoken."""

    voice: str
    speed: int
    pitch: int


@dataclass(frozen=True)
class Utterance:
    """One row of a transcripts file: the audio path (absolute) and its transcript."""

    audio: Path
    transcript: str


def normalize_transcript(text: str) -> str:
    """Lower case, letters / digits / apostrophes only, single spaces: "A dog, running." ->
    "a dog running"."""
    text = re.sub(r"[^a-z0-9' ]+", " ", text.lower())
    return " ".join(text.split())


def number_sentences(count: int, seed: int, min_digits: int = 3, max_digits: int = 6) -> list[str]:
    """`count` digit strings spoken as words, "three one four", lengths uniform in the range."""
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(DIGITS) for _ in range(rng.randint(min_digits, max_digits)))
        for _ in range(count)
    ]


_SUBJECTS = ("a man", "a woman", "a dog", "a child", "two girls", "a boy", "an old man", "a cat")
_VERBS = ("runs", "sits", "plays", "walks", "stands", "jumps", "sleeps", "waits")
_PLACES = (
    "on the beach", "in the park", "near the water", "on a bench", "in the snow",
    "at the door", "under a tree", "in the street",
)


def caption_sentences(
    count: int, seed: int, multi30k: str | Path | None = None, max_words: int = 8
) -> list[str]:
    """`count` short caption-like sentences, normalised (:func:`normalize_transcript`).

    From Multi30k's English training captions of at most `max_words` words when `multi30k`
    (its folder) holds ``train.en.gz``; else from a built-in grammar
    "subject verb place" ("a dog runs on the beach", 8 x 8 x 8 sentences).
    """
    rng = random.Random(seed)
    source = Path(multi30k) / "train.en.gz" if multi30k else None
    if source is not None and source.is_file():
        with open_text(source) as handle:
            pool = [normalize_transcript(line) for line in handle]
        pool = sorted({s for s in pool if s and len(s.split()) <= max_words})
        return [rng.choice(pool) for _ in range(count)]
    return [
        f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_PLACES)}" for _ in range(count)
    ]


def draw_conditions(conditions: Conditions, count: int, seed: int) -> list[Condition]:
    """`count` seeded (voice+variant, speed, pitch) draws from `conditions`."""
    rng = random.Random(seed)
    low, high = conditions.pitch_range
    return [
        Condition(
            f"{rng.choice(conditions.voices)}+{rng.choice(conditions.variants)}",
            rng.choice(conditions.speeds),
            rng.randint(low, high),
        )
        for _ in range(count)
    ]


def _espeak() -> str:
    program = shutil.which("espeak-ng")
    if program is None:
        raise RuntimeError(
            "generating speech needs the espeak-ng synthesiser: apt-get install -y espeak-ng"
        )
    return program


def speak(text: str, condition: Condition, sample_rate: int = 16000) -> torch.Tensor:
    """espeak-ng's rendering of `text` as a float waveform (L,) at `sample_rate`.

    Runs ``espeak-ng -v VOICE -s SPEED -p PITCH --stdout TEXT`` (22050 Hz WAV) and resamples.
    """
    from seqlab.data.audio import _soundfile, resample

    command = [
        _espeak(), "-v", condition.voice, "-s", str(condition.speed), "-p", str(condition.pitch),
        "--stdout", text,
    ]
    result = subprocess.run(command, capture_output=True, check=False)
    if result.returncode != 0 or not result.stdout:
        raise RuntimeError(
            f"espeak-ng failed on {text!r} with voice {condition.voice}: "
            f"{result.stderr.decode(errors='replace').strip()}"
        )
    data, rate = _soundfile().read(io.BytesIO(result.stdout), dtype="float32")
    return resample(torch.from_numpy(data), int(rate), sample_rate)


def add_noise(waveform: torch.Tensor, snr_db: float, generator: torch.Generator) -> torch.Tensor:
    r"""The waveform plus white Gaussian noise at signal-to-noise ratio `snr_db`.

    .. math::
        \sigma^2 = \frac{\overline{x^2}}{10^{\mathrm{SNR}/10}}, \qquad y = x + \sigma\,\epsilon,
        \ \epsilon \sim N(0, 1)

    with the signal power the mean square over the whole utterance.
    """
    power = waveform.pow(2).mean()
    sigma = torch.sqrt(power / 10 ** (snr_db / 10))
    return waveform + sigma * torch.randn(waveform.shape, generator=generator)


def _write_split(
    folder: Path,
    sentences: list[str],
    conditions: list[Condition],
    snr_db: float | None,
    seed: int,
    sample_rate: int,
    workers: int,
) -> None:
    from seqlab.data.audio import _soundfile

    soundfile = _soundfile()
    folder.mkdir(parents=True, exist_ok=True)

    def render(index: int) -> str:
        condition = conditions[index]
        waveform = speak(sentences[index], condition, sample_rate)
        if snr_db is not None:
            generator = torch.Generator().manual_seed(seed * 1_000_003 + index)
            waveform = add_noise(waveform, snr_db, generator)
        peak = float(waveform.abs().max())
        if peak > 0.99:  # keep clear of clipping in 16-bit PCM
            waveform = waveform * (0.99 / peak)
        name = f"{index:05d}.wav"
        soundfile.write(str(folder / name), waveform.numpy(), sample_rate, subtype="PCM_16")
        snr = "" if snr_db is None else f"{snr_db:g}"
        return (
            f"{name}\t{sentences[index]}\t{condition.voice}\t{condition.speed}\t"
            f"{condition.pitch}\t{snr}"
        )

    with ThreadPoolExecutor(max_workers=workers) as pool:
        rows = list(pool.map(render, range(len(sentences))))
    text = "audio\ttranscript\tvoice\tspeed\tpitch\tsnr_db\n" + "\n".join(rows) + "\n"
    (folder / "transcripts.tsv").write_text(text, encoding="utf-8")


def generate_corpus(
    out: str | Path,
    kind: str = "numbers",
    size: int = 2000,
    eval_size: int | None = None,
    snr_db: float | None = None,
    seed: int = 0,
    splits: tuple[str, ...] = ("train", "valid", "test"),
    sample_rate: int = 16000,
    multi30k: str | Path | None = None,
    workers: int = 2,
) -> Path:
    """Speak a corpus into `out` (see the module docstring); returns `out`.

    `size` training utterances, `eval_size` (default size // 10, at least 20) each in valid and
    test. Sentences and conditions are seeded per split, so the same arguments give the same
    corpus, and a test set made with noise holds the same sentences and voices as the clean one.
    """
    if kind not in ("numbers", "captions"):
        raise ValueError(f"kind should be 'numbers' or 'captions', got {kind!r}")
    for split in splits:
        if split not in ("train", "valid", "test"):
            raise ValueError(f"splits should name train, valid or test, got {split!r}")
    _espeak()
    eval_size = eval_size or max(20, size // 10)
    out = Path(out)
    offsets = {"train": 0, "valid": 1, "test": 2}
    for split in splits:
        count = size if split == "train" else eval_size
        split_seed = seed * 10 + offsets[split]
        if kind == "numbers":
            sentences = number_sentences(count, split_seed)
        else:
            sentences = caption_sentences(count, split_seed, multi30k)
        conditions = draw_conditions(HELD_OUT if split == "test" else TRAINING, count, split_seed)
        _write_split(out / split, sentences, conditions, snr_db, split_seed, sample_rate, workers)
    return out


_AUDIO_COLUMNS = ("audio", "path", "file", "filename")
_TEXT_COLUMNS = ("transcript", "sentence", "text")


def read_transcripts(path: str | Path) -> list[Utterance]:
    """The utterances of a transcripts TSV (or of a folder's ``transcripts.tsv``).

    Rows are ``audio<TAB>transcript`` (more columns are allowed after a header naming them);
    audio paths are relative to the TSV's folder unless absolute. Blank lines are skipped.
    A row without a transcript, an empty transcript, a missing audio file or a file with no
    rows raise :class:`DataError` naming the file and line.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "transcripts.tsv"
    if not path.is_file():
        raise DataError(
            f"{path} does not exist; give a TSV of audio<TAB>transcript rows or the folder "
            f"that holds transcripts.tsv"
        )
    audio_column, text_column = 0, 1
    utterances = []
    first = True
    for number, line in numbered_lines(path):
        if not line.strip():
            continue
        fields = line.split("\t")
        if first:  # a header row names its columns
            first = False
            names = [name.strip().lower() for name in fields]
            audio_names = [i for i, name in enumerate(names) if name in _AUDIO_COLUMNS]
            text_names = [i for i, name in enumerate(names) if name in _TEXT_COLUMNS]
            if audio_names and text_names:
                audio_column, text_column = audio_names[0], text_names[0]
                continue
        if len(fields) <= max(audio_column, text_column):
            raise DataError(
                f"{path}, line {number}: expected audio<TAB>transcript, got {line!r:.80}"
            )
        transcript = fields[text_column].strip()
        if not transcript:
            raise DataError(
                f"{path}, line {number}: empty transcript for {fields[audio_column]!r}; give "
                f"every audio file its text or remove the row"
            )
        audio = Path(fields[audio_column].strip())
        audio = audio if audio.is_absolute() else path.parent / audio
        if not audio.is_file():
            raise DataError(f"{path}, line {number}: audio file {audio} does not exist")
        utterances.append(Utterance(audio, transcript))
    if not utterances:
        raise DataError(f"{path} holds no audio<TAB>transcript rows")
    return utterances


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m seqlab.data.speech",
        description="Speak sentences with espeak-ng into DIR/{train,valid,test}/*.wav + "
        "transcripts.tsv; the test split uses voices, variants and speeds never trained on.",
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--kind", choices=("numbers", "captions"), default="numbers")
    parser.add_argument("--size", type=int, default=2000, help="training utterances")
    parser.add_argument("--eval-size", type=int, default=None,
                        help="utterances in valid and in test (default size // 10, at least 20)")
    parser.add_argument("--noise", type=float, default=None, metavar="SNR_DB",
                        help="add white noise at this signal-to-noise ratio in dB")
    parser.add_argument("--splits", default="train,valid,test",
                        help="comma-separated splits to write (e.g. test)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--multi30k", default="../shared/data/multi30k",
                        help="Multi30k folder for --kind captions (a built-in grammar if absent)")
    parser.add_argument("--workers", type=int, default=2, help="espeak-ng processes at once")
    args = parser.parse_args(argv)
    if args.size < 1:
        parser.error(f"--size should be a positive integer, got {args.size}")
    out = generate_corpus(
        args.out, args.kind, args.size, args.eval_size, args.noise, args.seed,
        tuple(s.strip() for s in args.splits.split(",") if s.strip()), args.sample_rate,
        args.multi30k, args.workers,
    )
    print(f"wrote {out}: " + ", ".join(
        f"{split} {len(read_transcripts(out / split))}" for split in ("train", "valid", "test")
        if (out / split / "transcripts.tsv").is_file()
    ))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
