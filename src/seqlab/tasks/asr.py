"""Speech recognition (many-to-many, unaligned): audio in, characters out.

Data path: audio files (WAV / FLAC, any rate: resampled to `data.sample_rate`) + transcripts ->
log-mel frames (N, F, M) normalised per utterance (+ SpecAugment masks on training batches when
`data.spec_augment`) and lengths, transcripts as characters framed <bos> ... <eos> (N, T) ->
:class:`~seqlab.models.ListenAttendSpell` (`model.family=las`) or
:class:`~seqlab.models.SpeechTransformer` (`model.family=transformer`) -> per-character
cross-entropy (+ CTC with `model.ctc_weight` > 0). Evaluation adds decoding (greedy, or beam
search with `predict.eval_beam_size` > 1) and scores the transcripts with the word and character
error rates (jiwer). `seqlab predict RUN file.wav ...` prints one transcript per audio file.

Data: `data.train` (and optional `data.valid` / `data.test`) are transcript TSVs
``audio<TAB>transcript`` or folders holding ``transcripts.tsv``
(:func:`seqlab.data.speech.read_transcripts`). Without `data.train`, a corpus is spoken with
espeak-ng (:mod:`seqlab.data.speech`: `data.generate` numbers or captions, `data.generate_size`
utterances, the test split in voices and speeds never trained on) into `data.cache_dir` the first
time and reused afterwards.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, model_validator

from seqlab.schema import StrictModel
from seqlab.tasks import register_task
from seqlab.tasks.base import (
    StepOutput,
    Task,
    eval_batches,
    example_batches,
    split_off,
    spread,
    to_device,
)

__all__ = ["AsrTask", "character_error_rate", "word_error_rate"]


def _jiwer():
    try:
        import jiwer
    except ImportError:
        raise ImportError(
            "WER / CER need the jiwer package: pip install 'seqlab[audio]' (or pip install jiwer)"
        ) from None
    return jiwer


def word_error_rate(references: list[str], hypotheses: list[str]) -> float:
    r"""Corpus WER = (S + D + I) / N over word sequences (jiwer's Levenshtein alignment).

    S, D, I: substituted, deleted and inserted words of the best alignment of each hypothesis to
    its reference, summed over the corpus; N the number of reference words. Can exceed 1.
    """
    if len(references) != len(hypotheses):
        raise ValueError(f"got {len(references)} references and {len(hypotheses)} hypotheses")
    return float(_jiwer().wer(list(references), [h if h.strip() else "" for h in hypotheses]))


def character_error_rate(references: list[str], hypotheses: list[str]) -> float:
    """Corpus CER: the same edit distance over characters (spaces count), / reference characters."""
    if len(references) != len(hypotheses):
        raise ValueError(f"got {len(references)} references and {len(hypotheses)} hypotheses")
    return float(_jiwer().cer(list(references), list(hypotheses)))


def default_cache_dir() -> Path:
    """Where generated corpora go: $SEQLAB_CACHE/speech, else ~/.cache/seqlab/speech."""
    root = os.environ.get("SEQLAB_CACHE") or Path.home() / ".cache" / "seqlab"
    return Path(root) / "speech"


class AsrData(StrictModel):
    train: str | None = None
    valid: str | None = None
    test: str | None = None
    valid_fraction: float = Field(0.05, gt=0, lt=1)
    # Without data.train: a corpus spoken with espeak-ng, cached.
    generate: Literal["numbers", "captions"] = "numbers"
    generate_size: int = Field(2000, ge=1)
    generate_eval_size: int | None = Field(None, ge=1)
    generate_noise_db: float | None = None
    cache_dir: str | None = None
    # Features.
    sample_rate: int = Field(16000, ge=1000)
    resample: bool = True
    n_mels: int = Field(40, ge=1)
    n_fft: int = Field(400, ge=16)
    hop_length: int = Field(160, ge=1)
    normalize_text: bool = True
    # Training utterances with more frames than this are left out (None keeps all).
    max_frames: int | None = Field(None, ge=1)
    spec_augment: bool = False
    time_masks: int = Field(2, ge=0)
    time_width: int = Field(20, ge=0)
    freq_masks: int = Field(2, ge=0)
    freq_width: int = Field(8, ge=0)


_LAS_KEYS = ("cell", "frame_stack", "encoder_hidden_size", "encoder_layers", "embedding_dim",
             "hidden_size", "attention", "attention_size")
_TRANSFORMER_KEYS = ("d_model", "nhead", "num_encoder_layers", "num_decoder_layers",
                     "dim_feedforward", "conv_strides", "max_length")


class AsrModel(StrictModel):
    family: Literal["las", "transformer"] = "las"
    dropout: float = Field(0.0, ge=0, le=1)
    ctc_weight: float = Field(0.0, ge=0, lt=1)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    # Listen, Attend and Spell.
    cell: Literal["lstm", "gru"] = "lstm"
    frame_stack: int = Field(3, ge=1)
    encoder_hidden_size: int = Field(128, ge=1)
    encoder_layers: int = Field(2, ge=1)
    embedding_dim: int = Field(32, ge=1)
    hidden_size: int = Field(256, ge=1)
    attention: Literal["bahdanau", "dot", "general"] = "bahdanau"
    attention_size: int | None = Field(None, ge=1)
    # Whisper-shaped Transformer.
    d_model: int = Field(128, ge=1)
    nhead: int = Field(4, ge=1)
    num_encoder_layers: int = Field(3, ge=1)
    num_decoder_layers: int = Field(2, ge=1)
    dim_feedforward: int | None = Field(None, ge=1)
    conv_strides: list[int] = Field(default_factory=lambda: [1, 2], min_length=1)
    # Learned decoder positions: the longest transcript (characters + BOS / EOS) it can write.
    max_length: int = Field(512, ge=2)

    @model_validator(mode="after")
    def _check_family_keys(self):
        # A resolved config.yaml holds every key, so only values changed from the default count.
        other = _TRANSFORMER_KEYS if self.family == "las" else _LAS_KEYS
        fields = type(self).model_fields
        given = [
            key for key in other
            if getattr(self, key) != fields[key].get_default(call_default_factory=True)
        ]
        if given:
            raise ValueError(
                f"model.{given[0]} does not apply to model.family={self.family}; the "
                f"{self.family} keys are {', '.join(_LAS_KEYS if self.family == 'las' else _TRANSFORMER_KEYS)}"
            )
        if self.family == "transformer" and self.d_model % self.nhead:
            raise ValueError(
                f"model.d_model={self.d_model} should be divisible by model.nhead={self.nhead}"
            )
        return self


class AsrPredict(StrictModel):
    beam_size: int = Field(4, ge=1)
    length_penalty: float = Field(1.0, ge=0)
    max_length: int = Field(200, ge=1)
    eval_beam_size: int = Field(1, ge=1)
    num_examples: int = Field(5, ge=0)


@register_task
class AsrTask(Task):
    name = "asr"
    summary = "speech recognition: log-mel frames -> characters (LAS or a tiny Whisper-shaped Transformer)"
    DataConfig = AsrData
    ModelConfig = AsrModel
    PredictConfig = AsrPredict
    head_modules = ()
    metric = "wer"
    mode = "min"
    unit = "tok"

    tokenizer = None
    generated: Path | None = None

    def _featurizer(self):
        from seqlab.data.audio import LogMel

        d = self.data
        return LogMel(d.sample_rate, d.n_mels, d.n_fft, d.hop_length)

    def _text(self, transcript: str) -> str:
        from seqlab.data.speech import normalize_transcript

        return normalize_transcript(transcript) if self.data.normalize_text else transcript.strip()

    def _generated_dir(self) -> Path:
        """The cached generated corpus, spoken now if it is not there yet."""
        from seqlab.data.speech import generate_corpus

        d = self.data
        root = Path(d.cache_dir) if d.cache_dir else default_cache_dir()
        noise = "" if d.generate_noise_db is None else f"-snr{d.generate_noise_db:g}"
        eval_size = d.generate_eval_size or max(20, d.generate_size // 10)
        folder = root / f"{d.generate}-{d.generate_size}-{eval_size}{noise}-seed{self.seed}"
        if not (folder / "test" / "transcripts.tsv").is_file():
            print(
                f"speaking a {d.generate} corpus ({d.generate_size} training utterances) into "
                f"{folder} with espeak-ng (once; later runs reuse it)", file=sys.stderr,
            )
            try:
                generate_corpus(
                    folder, d.generate, d.generate_size, eval_size, d.generate_noise_db, self.seed,
                    multi30k=Path("../shared/data/multi30k"),
                )
            except RuntimeError as error:
                from seqlab.schema import ConfigError

                raise ConfigError(
                    f"{error}; or give your own data with data.train=TSV_OR_FOLDER "
                    f"(audio<TAB>transcript rows)"
                ) from None
        return folder

    def _utterances(self) -> dict[str, list]:
        from seqlab.data.speech import read_transcripts

        d = self.data
        paths = {"train": d.train, "valid": d.valid, "test": d.test}
        self.generated = None
        if d.train is None:
            folder = self.generated = self._generated_dir()
            paths = {
                "train": str(folder / "train"),
                "valid": d.valid or str(folder / "valid"),
                "test": d.test or str(folder / "test"),
            }
        splits = {}
        if paths["valid"]:
            if self.needs_training_data:
                splits["train"] = read_transcripts(paths["train"])
            splits["valid"] = read_transcripts(paths["valid"])
        else:
            splits["train"], splits["valid"] = split_off(
                read_transcripts(paths["train"]), d.valid_fraction, self.seed
            )
        if paths["test"]:
            splits["test"] = read_transcripts(paths["test"])
        return splits

    def _features(self, utterances) -> list[torch.Tensor]:
        """Each utterance's log-mel frames (F, M).

        Generated corpora keep them next to the audio (``features-<settings>.pt``), computed on
        first use, since their files never change; user data is read afresh every time.
        """
        from seqlab.data.audio import load_audio

        featurize, d = self._featurizer(), self.data
        folder = utterances[0].audio.parent
        cache = None
        if self.generated is not None and folder.parent == self.generated:
            cache = folder / f"features-{d.sample_rate}-{d.n_mels}-{d.n_fft}-{d.hop_length}.pt"
            if cache.is_file():
                features = torch.load(cache)
                if len(features) == len(utterances):
                    return features
        features = [featurize(load_audio(u.audio, d.sample_rate, d.resample)) for u in utterances]
        if cache is not None:
            torch.save(features, cache)
        return features

    def prepare(self, fit_vocab: bool = True) -> None:
        from seqlab.data.readers import DataError
        from seqlab.data.tokenizers import Tokenizer

        splits = self._utterances()
        self.references = {
            split: [self._text(u.transcript) for u in items] for split, items in splits.items()
        }
        for split, items in splits.items():
            for utterance, text in zip(items, self.references[split]):
                if not text:
                    raise DataError(
                        f"{utterance.audio}: its transcript is empty after normalisation "
                        f"(data.normalize_text=true keeps letters, digits and apostrophes)"
                    )
        if fit_vocab:
            self.tokenizer = self.fit_tokenizer(
                lambda: Tokenizer.train(self.references["train"], kind="char")
            )
        self.features = {split: self._features(items) for split, items in splits.items()}
        self.targets = {
            split: [self.tokenizer.encode(text, add_bos=True, add_eos=True) for text in texts]
            for split, texts in self.references.items()
        }
        if "train" in self.features and self.data.max_frames is not None:
            keep = [i for i, f in enumerate(self.features["train"]) if f.size(0) <= self.data.max_frames]
            for table in (self.features, self.targets, self.references):
                table["train"] = [table["train"][i] for i in keep]

    def splits(self) -> list[str]:
        return [s for s in ("valid", "test") if self.features.get(s)]

    def save_artifacts(self, run_dir: Path) -> None:
        self.tokenizer.save(run_dir / "tokenizer.json")

    def load_artifacts(self, run_dir: Path) -> None:
        from seqlab.data.tokenizers import Tokenizer

        self.tokenizer = Tokenizer.load(run_dir / "tokenizer.json")

    def build_model(self) -> torch.nn.Module:
        from seqlab.models.speech import ListenAttendSpell, SpeechTransformer

        m, vocab = self.model_config, self.tokenizer.vocab_size
        common = {
            "n_mels": self.data.n_mels, "dropout": m.dropout, "ctc_weight": m.ctc_weight,
            "label_smoothing": m.label_smoothing, "pad_id": self.tokenizer.pad_id,
        }
        if m.family == "las":
            return ListenAttendSpell(
                vocab, frame_stack=m.frame_stack, encoder_hidden_size=m.encoder_hidden_size,
                encoder_layers=m.encoder_layers, embedding_dim=m.embedding_dim,
                hidden_size=m.hidden_size, cell=m.cell, attention=m.attention,
                attention_size=m.attention_size, **common,
            )
        return SpeechTransformer(
            vocab, d_model=m.d_model, nhead=m.nhead, num_encoder_layers=m.num_encoder_layers,
            num_decoder_layers=m.num_decoder_layers, dim_feedforward=m.dim_feedforward,
            conv_strides=tuple(m.conv_strides), max_length=m.max_length,
            **common,
        )

    def train_batches(self, epoch, batch_size, rank=0, world_size=1):
        lengths = [f.size(0) for f in self.features["train"]]
        return example_batches(lengths, batch_size, self.seed, epoch, rank, world_size)

    def _collate(self, split: str, indices, augment: bool = False) -> dict[str, torch.Tensor]:
        from seqlab.data.audio import spec_augment
        from seqlab.data.batching import pad_sequences

        features = [self.features[split][i] for i in indices]
        if augment:
            d = self.data
            features = [
                spec_augment(f, d.time_masks, d.time_width, d.freq_masks, d.freq_width)
                for f in features
            ]
        lengths = torch.tensor([f.size(0) for f in features], dtype=torch.long)
        padded = torch.nn.utils.rnn.pad_sequence(features, batch_first=True)  # (N, F, M)
        tgt, _ = pad_sequences([self.targets[split][i] for i in indices], pad_value=self.tokenizer.pad_id)
        return {"features": padded, "lengths": lengths, "tgt": tgt}

    def collate(self, key):
        return self._collate("train", key, augment=self.data.spec_augment)

    def training_step(self, model, batch, carry):
        out = model(batch["features"], batch["lengths"], batch["tgt"])
        tokens = int((batch["tgt"][:, 1:] != self.tokenizer.pad_id).sum())
        return StepOutput(out.loss, tokens)

    def transcribe(self, model, features: torch.Tensor, lengths: torch.Tensor, beam_size: int) -> list[str]:
        """Transcripts of a padded batch (N, F, M): greedy for beam_size 1, else beam search."""
        from seqlab.decode import beam_search, greedy_decode

        p, t = self.predict_config, self.tokenizer
        if beam_size == 1:
            results = greedy_decode(model, features, lengths, t.bos_id, t.eos_id, p.max_length)
            return [t.decode(tokens) for tokens, _ in results]
        results = beam_search(
            model, features, lengths, t.bos_id, t.eos_id, beam_size=beam_size,
            length_penalty=p.length_penalty, max_length=p.max_length,
        )
        return [t.decode(nbest[0][0]) for nbest in results]

    @torch.no_grad()
    def evaluate(self, model, split, batch_size, device, max_batches=None):
        model.eval()
        lengths = [f.size(0) for f in self.features[split]]
        total_loss, total_tokens = 0.0, 0
        hypotheses: list[str] = []
        references: list[str] = []
        for key in spread(eval_batches(lengths, batch_size), max_batches):
            batch = to_device(self._collate(split, key), device)
            out = model(batch["features"], batch["lengths"], batch["tgt"])
            tokens = int((batch["tgt"][:, 1:] != self.tokenizer.pad_id).sum())
            total_loss += float(out.loss) * tokens
            total_tokens += tokens
            hypotheses += self.transcribe(
                model, batch["features"], batch["lengths"], self.predict_config.eval_beam_size
            )
            references += [self.references[split][i] for i in key]
        loss = total_loss / max(total_tokens, 1)
        return {
            "loss": loss,
            "perplexity": math.exp(min(loss, 50.0)),
            "wer": word_error_rate(references, hypotheses),
            "cer": character_error_rate(references, hypotheses),
            "exact_match": sum(h.strip() == r for h, r in zip(hypotheses, references)) / max(len(references), 1),
        }

    def predict(self, model, inputs, device):
        """Each input is the path of an audio file (WAV, FLAC, ...); one transcript per file."""
        from seqlab.data.audio import load_audio

        model.eval()
        if not inputs:
            return []
        featurize, d = self._featurizer(), self.data
        features = [featurize(load_audio(path.strip(), d.sample_rate, d.resample)) for path in inputs]
        lengths = torch.tensor([f.size(0) for f in features], dtype=torch.long)
        padded = torch.nn.utils.rnn.pad_sequence(features, batch_first=True)
        return self.transcribe(
            model, padded.to(device), lengths.to(device), self.predict_config.beam_size
        )

    def report(self, model, device):
        count = self.predict_config.num_examples
        split = "test" if self.features.get("test") else "valid"
        indices = list(range(min(count, len(self.features[split]))))
        if not indices:
            return []
        batch = to_device(self._collate(split, indices), device)
        outputs = self.transcribe(model, batch["features"], batch["lengths"], self.predict_config.beam_size)
        lines = [f"{len(outputs)} {split} utterances (beam size {self.predict_config.beam_size}):"]
        for output, reference in zip(outputs, (self.references[split][i] for i in indices)):
            mark = "ok" if output.strip() == reference else "  "
            lines.append(f"{mark} {output}    (reference: {reference})")
        return lines
