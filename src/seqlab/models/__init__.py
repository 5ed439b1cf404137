"""Task models assembled from seqlab.nn: classifier, tagger, language models (causal and
masked), seq2seq, captioner, Transformers; `load(run_dir)` rebuilds any run's model."""

from seqlab.models.captioner import Captioner, CaptionerOutput, ImageEncoder, ImageMemory
from seqlab.models.classifier import SequenceClassifier
from seqlab.models.forecaster import TransformerForecaster
from seqlab.models.hf import from_pretrained_hf
from seqlab.models.language_model import LanguageModel, detach_state
from seqlab.models.masked_lm import RecurrentMaskedLM
from seqlab.models.outputs import ClassifierOutput, LMOutput, TaggerOutput
from seqlab.models.recurrent import recurrent_layer
from seqlab.models.registry import build_model, load, model_spec, register_model
from seqlab.models.reward import RewardModel, RewardOutput, ValueHeadLM
from seqlab.models.seq2seq import Seq2Seq, Seq2SeqOutput
from seqlab.models.speech import ListenAttendSpell, SpeechOutput, SpeechTransformer
from seqlab.models.tagger import SequenceTagger
from seqlab.models.transformer import (
    TransformerClassifier,
    TransformerEncoderModel,
    TransformerLM,
    TransformerMaskedLM,
    TransformerSeq2Seq,
    TransformerTagger,
)
from seqlab.models.video import VideoCaptioner, VideoEncoder
from seqlab.models.vision import PatchEmbedding, SmallCNN, VisionTransformer

__all__ = [
    "Captioner",
    "CaptionerOutput",
    "ClassifierOutput",
    "ImageEncoder",
    "ImageMemory",
    "LMOutput",
    "LanguageModel",
    "ListenAttendSpell",
    "PatchEmbedding",
    "RecurrentMaskedLM",
    "RewardModel",
    "RewardOutput",
    "Seq2Seq",
    "Seq2SeqOutput",
    "SequenceClassifier",
    "SequenceTagger",
    "SmallCNN",
    "SpeechOutput",
    "SpeechTransformer",
    "TaggerOutput",
    "TransformerClassifier",
    "TransformerEncoderModel",
    "TransformerForecaster",
    "TransformerLM",
    "TransformerMaskedLM",
    "TransformerSeq2Seq",
    "TransformerTagger",
    "ValueHeadLM",
    "VideoCaptioner",
    "VideoEncoder",
    "VisionTransformer",
    "build_model",
    "detach_state",
    "from_pretrained_hf",
    "load",
    "model_spec",
    "recurrent_layer",
    "register_model",
]
