"""Task models assembled from seqlab.nn: classifier, tagger, language model, seq2seq, captioner."""

from seqlab.models.captioner import Captioner, CaptionerOutput, ImageEncoder, ImageMemory
from seqlab.models.classifier import SequenceClassifier
from seqlab.models.hf import from_pretrained_hf
from seqlab.models.language_model import LanguageModel, detach_state
from seqlab.models.outputs import ClassifierOutput, LMOutput, TaggerOutput
from seqlab.models.recurrent import recurrent_layer
from seqlab.models.seq2seq import Seq2Seq, Seq2SeqOutput
from seqlab.models.tagger import SequenceTagger
from seqlab.models.transformer import (
    TransformerClassifier,
    TransformerEncoderModel,
    TransformerLM,
    TransformerMaskedLM,
    TransformerSeq2Seq,
    TransformerTagger,
)

__all__ = [
    "Captioner",
    "CaptionerOutput",
    "ClassifierOutput",
    "ImageEncoder",
    "ImageMemory",
    "LMOutput",
    "LanguageModel",
    "Seq2Seq",
    "Seq2SeqOutput",
    "SequenceClassifier",
    "SequenceTagger",
    "TaggerOutput",
    "TransformerClassifier",
    "TransformerEncoderModel",
    "TransformerLM",
    "TransformerMaskedLM",
    "TransformerSeq2Seq",
    "TransformerTagger",
    "detach_state",
    "from_pretrained_hf",
    "recurrent_layer",
]
