"""LoRA: low-rank updates added to weight matrices (Hu et al. 2021).

A frozen weight W (out, in) learns an update of rank r instead of a full one:

    W' = W + s · B A,     A (r, in), B (out, r),     s = alpha / r   (alpha / sqrt(r): rsLoRA)

B starts at zero, so the tuned model equals the base model at step 0; A starts Kaiming-uniform
with a = sqrt(5) (PEFT's and nn.Linear's start). Only A and B train: r·(in + out) numbers per
matrix instead of in·out.

Two ways of attaching, one formula:

* :class:`LoraLinear` wraps an ``nn.Linear`` (kept as ``base_layer``, PEFT's layout) and adds the
  branch to its output, y = W x + b + s · B A Dropout(x): the dropout acts on the branch's input.
* :class:`LoraParametrization` re-parametrises a weight that a layer reads directly, through
  ``torch.nn.utils.parametrize``: the fused q/k/v matrix ``in_proj_weight`` of
  :class:`seqlab.nn.MultiheadAttention` (one update for all of it, or one per part q / k / v,
  as PEFT's BERT targets ``query`` and ``value``) and the recurrent matrices ``weight_ih_l*`` /
  ``weight_hh_l*`` of every seqlab recurrent layer. The layer's own forward runs unchanged on
  W' (torch's fused RNN kernel, the compiled time loop), so every cell variant, ``lengths`` and
  packed input keep working. W' is formed once per forward; its price is one (out, in) matrix
  product per step (and, backwards, the gradient of the whole W', from which A's and B's
  follow), so dropout on the branch input has no place there: those weights take no dropout.
  The attention's in-projection is the exception that knows its weight: it takes the update
  as a branch on its activations, x W^T + s · x A^T B^T (:meth:`LoraParametrization.branch`),
  the same numbers without the gradient of W'.

``merge`` folds s · B A into W (the layer then runs at the base model's speed), ``unmerge``
takes it out again; ``disabled`` turns the update off (the base model, e.g. DPO's reference).
"""

from __future__ import annotations

import fnmatch
import math
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from seqlab.tune.base import TuningModule

__all__ = [
    "LoraLinear",
    "LoraParametrization",
    "apply_lora",
    "default_lora_targets",
    "lora_scaling",
]

PARTS = ("q", "k", "v")


def lora_scaling(r: int, alpha: float, rslora: bool = False) -> float:
    """s = alpha / r, or alpha / sqrt(r) with rsLoRA (Kalajdzievski 2023)."""
    return alpha / math.sqrt(r) if rslora else alpha / r


def _init_pair(lora_A: torch.Tensor, lora_B: torch.Tensor) -> None:
    """PEFT's start: A Kaiming-uniform (a = sqrt(5)), B zero, so B A = 0."""
    nn.init.kaiming_uniform_(lora_A, a=math.sqrt(5))
    nn.init.zeros_(lora_B)


class LoraLinear(TuningModule):
    r"""An ``nn.Linear`` with a low-rank update on a side branch.

    .. math::
        y = W x + b + s\, B A\, \mathrm{Dropout}(x)

    ====== =================================
    input  (*, in_features)
    output (*, out_features)
    ====== =================================
    """

    def __init__(
        self, base_layer: nn.Linear, r: int, alpha: float, dropout: float = 0.0,
        rslora: bool = False,
    ) -> None:
        super().__init__()
        self.base_layer = base_layer
        weight = base_layer.weight
        factory = {"device": weight.device, "dtype": weight.dtype}
        self.r = r
        self.scaling = lora_scaling(r, alpha, rslora)
        self.lora_A = nn.Parameter(torch.empty(r, base_layer.in_features, **factory))
        self.lora_B = nn.Parameter(torch.empty(base_layer.out_features, r, **factory))
        self.lora_dropout = nn.Dropout(dropout)
        self.merged = False
        _init_pair(self.lora_A, self.lora_B)

    @property
    def weight(self) -> torch.Tensor:
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base_layer.bias

    @property
    def in_features(self) -> int:
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features

    def delta(self) -> torch.Tensor:
        """s · B A, (out, in)."""
        return self.scaling * (self.lora_B @ self.lora_A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output = self.base_layer(x)
        if self.disabled or self.merged:
            return output
        branch = F.linear(F.linear(self.lora_dropout(x), self.lora_A), self.lora_B)  # (*, out)
        return output + self.scaling * branch

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            self.base_layer.weight += self.delta()
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.base_layer.weight -= self.delta()
            self.merged = False

    def extra_repr(self) -> str:
        return f"r={self.r}, scaling={self.scaling:g}"


class LoraParametrization(TuningModule):
    r"""W' = W + s · B A for a weight a layer reads itself (``torch.nn.utils.parametrize``).

    With ``parts`` (for the fused q/k/v matrix, rows [W_q; W_k; W_v]) each named part gets its
    own pair, ``lora_A_q`` / ``lora_B_q`` ..., and the other parts no update:

    .. math::
        W' = W + s \begin{bmatrix} B_q A_q \\ 0 \\ B_v A_v \end{bmatrix}
    """

    def __init__(
        self, weight: torch.Tensor, r: int, alpha: float, rslora: bool = False,
        parts: Sequence[str] = (),
    ) -> None:
        super().__init__()
        rows, columns = weight.shape
        factory = {"device": weight.device, "dtype": weight.dtype}
        self.r = r
        self.scaling = lora_scaling(r, alpha, rslora)
        self.parts = tuple(part for part in PARTS if part in parts)
        self.merged = False
        if not self.parts:
            self.lora_A = nn.Parameter(torch.empty(r, columns, **factory))
            self.lora_B = nn.Parameter(torch.empty(rows, r, **factory))
            _init_pair(self.lora_A, self.lora_B)
        else:
            if rows % len(PARTS):
                raise ValueError(f"a q/k/v weight has 3·E rows, got shape {tuple(weight.shape)}")
            self.part_size = rows // len(PARTS)
            for part in self.parts:
                lora_A = nn.Parameter(torch.empty(r, columns, **factory))
                lora_B = nn.Parameter(torch.empty(self.part_size, r, **factory))
                _init_pair(lora_A, lora_B)
                self.register_parameter(f"lora_A_{part}", lora_A)
                self.register_parameter(f"lora_B_{part}", lora_B)

    def pair(self, part: str | None = None) -> tuple[nn.Parameter, nn.Parameter]:
        """(A, B) of the whole matrix (part None) or of part q / k / v."""
        if part is None:
            return self.lora_A, self.lora_B
        return getattr(self, f"lora_A_{part}"), getattr(self, f"lora_B_{part}")

    def delta(self) -> torch.Tensor:
        """s · B A as a full (out, in) matrix, zero rows for parts without an update."""
        if not self.parts:
            return self.scaling * (self.lora_B @ self.lora_A)
        blocks = []
        for part in PARTS:
            if part in self.parts:
                lora_A, lora_B = self.pair(part)
                blocks.append(lora_B @ lora_A)  # (E, in)
            else:
                blocks.append(self._zero_block())
        return self.scaling * torch.cat(blocks)  # (3E, in)

    def branch(self, x: torch.Tensor, part: int | None = None) -> torch.Tensor | None:
        """s · x (B A)^T on the activations, for the output rows of all of W (part None) or of
        part 0 / 1 / 2 (q / k / v) of a fused matrix; None when no update applies there.

        Equal to the rows' share of x ΔW^T, by two thin products (x A^T, then B^T) instead of
        forming ΔW: a layer that knows its weight can take the update this way (the attention's
        in-projection does), which spares the (out, in) gradient of W' in the backward pass.
        """
        if self.disabled or self.merged:
            return None
        if not self.parts:
            lora_B = self.lora_B
            if part is not None:
                size = lora_B.size(0) // len(PARTS)
                lora_B = lora_B[part * size:(part + 1) * size]
            return self.scaling * F.linear(F.linear(x, self.lora_A), lora_B)
        if part is not None:
            if PARTS[part] not in self.parts:
                return None
            lora_A, lora_B = self.pair(PARTS[part])
            return self.scaling * F.linear(F.linear(x, lora_A), lora_B)
        outputs = []
        for name in PARTS:
            if name in self.parts:
                lora_A, lora_B = self.pair(name)
                outputs.append(F.linear(F.linear(x, lora_A), lora_B))  # (..., E)
            else:
                outputs.append(x.new_zeros(*x.shape[:-1], self.part_size))
        return self.scaling * torch.cat(outputs, dim=-1)  # (..., 3E)

    def _zero_block(self) -> torch.Tensor:
        lora_A = self.pair(self.parts[0])[0]
        return lora_A.new_zeros(self.part_size, lora_A.shape[1])

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if self.disabled or self.merged:
            return weight
        if not self.parts:
            # W + s · B A in one call: this runs at every forward pass.
            return torch.addmm(weight, self.lora_B, self.lora_A, alpha=self.scaling)
        return weight + self.delta()

    def extra_repr(self) -> str:
        parts = f", parts={','.join(self.parts)}" if self.parts else ""
        return f"r={self.r}, scaling={self.scaling:g}{parts}"


def _candidates(model: nn.Module) -> dict[str, tuple[nn.Module, str]]:
    """Every weight matrix LoRA can attach to: name -> (owning module, parameter name).

    nn.Linear weights, the fused q/k/v matrix, recurrent matrices, embedding tables: any 2-D
    parameter (but one a tuning method added, or one parametrised already). Embedding tables
    are never a default target: name them (e.g. ``embedding``) to give every token's vector a
    low-rank update, W' = W + s · B A with B (vocabulary, r) and A (r, dim).
    """
    found = {}
    for module_name, module in model.named_modules():
        if isinstance(module, TuningModule) or parametrize.is_parametrized(module):
            continue
        for name, parameter in module.named_parameters(recurse=False):
            if parameter.dim() == 2:
                found[f"{module_name}.{name}" if module_name else name] = (module, name)
    return found


def default_lora_targets(model: nn.Module) -> tuple[str, ...]:
    """W_q and W_v of every attention layer (Hu et al.'s choice) in a Transformer; the input and
    recurrent matrices of every layer in a recurrent model."""
    from seqlab.nn import MultiheadAttention

    if any(isinstance(m, MultiheadAttention) for m in model.modules()):
        return ("in_proj_weight:q", "in_proj_weight:v")
    names = _candidates(model)
    # minGRU / minLSTM have input matrices only.
    recurrent = tuple(pattern for pattern in ("weight_ih_l*", "weight_hh_l*")
                      if any(_matches(name, pattern) for name in names))
    if recurrent:
        return recurrent
    raise ValueError(
        f"no default LoRA targets for {type(model).__name__}; pass targets, weight name "
        f"patterns among: {', '.join(names)}"
    )


def _split_pattern(pattern: str) -> tuple[str, str | None]:
    if ":" not in pattern:
        return pattern, None
    name, part = pattern.rsplit(":", 1)
    if part not in PARTS:
        raise ValueError(
            f"LoRA target {pattern!r}: the part after ':' should be one of q, k, v (rows of the "
            f"fused in_proj_weight), got {part!r}"
        )
    return name, part


def _matches(name: str, pattern: str) -> bool:
    """Glob on the full weight name, on any trailing part of it, or on its layer's name."""
    names = (name, name.removesuffix(".weight"))
    return any(fnmatch.fnmatch(n, pattern) or fnmatch.fnmatch(n, f"*.{pattern}") for n in names)


def resolve_targets(model: nn.Module, targets: Sequence[str]) -> dict[str, set[str] | None]:
    """weight name -> parts (None for the whole matrix) for every pattern in `targets`."""
    candidates = _candidates(model)
    chosen: dict[str, set[str] | None] = {}
    for pattern in targets:
        glob, part = _split_pattern(pattern)
        hits = [name for name in candidates if _matches(name, glob)]
        if not hits:
            raise ValueError(
                f"LoRA target {pattern!r} matches no weight of {type(model).__name__}; weights "
                f"that exist: {', '.join(candidates)}"
            )
        for name in hits:
            if part is not None and not name.endswith("in_proj_weight"):
                raise ValueError(
                    f"LoRA target {pattern!r}: parts q / k / v only exist in a fused "
                    f"in_proj_weight, not in {name!r}"
                )
            if part is None or chosen.get(name, set()) is None:
                chosen[name] = None
            else:
                chosen.setdefault(name, set()).add(part)
    return chosen


def apply_lora(
    model: nn.Module,
    r: int = 8,
    alpha: float | None = None,
    dropout: float = 0.0,
    targets: Sequence[str] | None = None,
    rslora: bool = False,
) -> tuple[str, ...]:
    """Attach LoRA to the weights named by `targets` (see :func:`default_lora_targets`).

    A target is a glob on weight names (``"in_proj_weight"``, ``"weight_hh_l*"``,
    ``"layers.0.linear1"``), matched against the full name or any trailing part of it;
    ``in_proj_weight:q`` names one part of the fused q/k/v matrix. `alpha` defaults to r
    (s = 1). Returns the names of the weights that got an update.
    """
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ValueError(f"LoRA rank r should be a positive integer, got {r!r}")
    alpha = float(r if alpha is None else alpha)
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"LoRA dropout should be a number in range [0, 1), got {dropout!r}")
    if isinstance(targets, str):
        targets = [targets]
    targets = tuple(targets) if targets else default_lora_targets(model)
    chosen = resolve_targets(model, targets)
    candidates = _candidates(model)
    shared = _shared_parameters(model)
    modules = dict(model.named_modules())
    attached = []
    parametrised = []
    for name, parts in chosen.items():
        module, parameter_name = candidates[name]
        if id(getattr(module, parameter_name)) in shared:
            raise ValueError(
                f"LoRA target {name!r} is a weight shared with another layer (a tied embedding); "
                f"an update would change both: leave it out of targets"
            )
        if isinstance(module, nn.Linear) and parameter_name == "weight":
            module_name = name.rsplit(".", 1)[0] if "." in name else ""
            parent_name, _, child = module_name.rpartition(".")
            parent = modules[parent_name] if parent_name else model
            setattr(parent, child, LoraLinear(module, r, alpha, dropout, rslora))
        else:
            weight = getattr(module, parameter_name)
            lora = LoraParametrization(weight, r, alpha, rslora, sorted(parts or ()))
            parametrize.register_parametrization(module, parameter_name, lora, unsafe=True)
            parametrised.append(name)
        attached.append(name)
    if dropout > 0 and parametrised:
        warnings.warn(
            f"LoRA dropout={dropout} acts on nn.Linear targets only; {', '.join(parametrised)} "
            f"take their update on the weight itself, without dropout", stacklevel=3,
        )
    return tuple(attached)


def _shared_parameters(model: nn.Module) -> set[int]:
    """ids of parameters registered under more than one name (tied weights)."""
    counts: dict[int, int] = {}
    for _, parameter in model.named_parameters(remove_duplicate=False):
        counts[id(parameter)] = counts.get(id(parameter), 0) + 1
    return {key for key, count in counts.items() if count > 1}


def lora_layers(model: nn.Module) -> list[LoraLinear | tuple[nn.Module, str, LoraParametrization]]:
    """Every LoRA attachment: wrapped layers, and (module, weight name, parametrisation)."""
    found = []
    for module in model.modules():
        if isinstance(module, LoraLinear):
            found.append(module)
        elif parametrize.is_parametrized(module):
            for name, parametrizations in module.parametrizations.items():
                for item in parametrizations:
                    if isinstance(item, LoraParametrization):
                        found.append((module, name, item))
    return found


@torch.no_grad()
def merge_lora(model: nn.Module) -> int:
    """Fold s · B A into every LoRA weight; returns how many were merged now."""
    merged = 0
    for layer in lora_layers(model):
        if isinstance(layer, LoraLinear):
            merged += not layer.merged
            layer.merge()
            continue
        module, name, lora = layer
        if not lora.merged:
            module.parametrizations[name].original += lora.delta()
            lora.merged = True
            merged += 1
    return merged


@torch.no_grad()
def unmerge_lora(model: nn.Module) -> int:
    """Take s · B A out of every merged LoRA weight again; returns how many were unmerged."""
    unmerged = 0
    for layer in lora_layers(model):
        if isinstance(layer, LoraLinear):
            unmerged += layer.merged
            layer.unmerge()
            continue
        module, name, lora = layer
        if lora.merged:
            module.parametrizations[name].original -= lora.delta()
            lora.merged = False
            unmerged += 1
    return unmerged
