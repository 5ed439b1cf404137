"""Tuning: full fine-tuning, LoRA, bottleneck adapters, prefix tuning and prompt tuning on any
seqlab model, adapter files, and Hugging Face PEFT's LoRA format."""

from seqlab.tune.adapters import PLACEMENTS, BottleneckAdapter, apply_adapters
from seqlab.tune.apply import (
    apply_tuning,
    disable_adapters,
    merge,
    merge_and_unload,
    tuned_state_dict,
    tuning_of,
    unmerge,
)
from seqlab.tune.base import (
    METHODS,
    TUNING_PREFIXES,
    TuningReport,
    base_checksum,
    base_state_dict,
    default_heads,
)
from seqlab.tune.files import load_adapter, read_adapter_config, save_adapter
from seqlab.tune.lora import LoraLinear, LoraParametrization, apply_lora, default_lora_targets
from seqlab.tune.peft_format import load_peft, save_peft
from seqlab.tune.prefix import PrefixEncoder, PrefixState, apply_prefix, prefix_from_prompt
from seqlab.tune.prompt import PromptEmbedding, apply_prompt

__all__ = [
    "METHODS",
    "PLACEMENTS",
    "TUNING_PREFIXES",
    "BottleneckAdapter",
    "LoraLinear",
    "LoraParametrization",
    "PrefixEncoder",
    "PrefixState",
    "PromptEmbedding",
    "TuningReport",
    "apply_adapters",
    "apply_lora",
    "apply_prefix",
    "apply_prompt",
    "apply_tuning",
    "base_checksum",
    "base_state_dict",
    "default_heads",
    "default_lora_targets",
    "disable_adapters",
    "load_adapter",
    "load_peft",
    "merge",
    "merge_and_unload",
    "prefix_from_prompt",
    "read_adapter_config",
    "save_adapter",
    "save_peft",
    "tuned_state_dict",
    "tuning_of",
    "unmerge",
]
