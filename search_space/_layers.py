"""Layer types, registered by name.

A :class:`LayerType` says what a layer *is* (its family, kernel, what input it
takes, whether it holds weights or can downsample); how it is built lives in
``_builder.py`` and what it costs in ``_cost.py``, both keyed by family.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from nas._registry import Registry

Family = Literal["conv", "dwsep", "mbconv", "maxpool", "avgpool", "identity", "mlp"]


@dataclass(frozen=True)
class LayerType:
    """What a registered layer type is.

    Attributes:
        name: the registered name (``conv3x3``).
        family: how it is built and costed.
        kernel: kernel size along each spatial dimension (``conv3x3`` is a
            3-wide kernel on a sequence), 0 for layers without one.
        ranks: the input ranks it takes: 3 for images (C, H, W), 2 for
            sequences (C, L), 1 for vectors (F,).
        has_weights: False for parameter-free layers, which keep their input
            width, are never quantized and have no width or bits to search.
        can_downsample: whether it may sit where a stage's stride > 1 applies.
        description: one line for ``nas spaces --layers``.
    """

    name: str
    family: Family
    kernel: int
    ranks: tuple[int, ...]
    has_weights: bool
    can_downsample: bool
    description: str

    @property
    def uses_expansion(self) -> bool:
        return self.family == "mbconv"


LAYER_TYPES: Registry[LayerType] = Registry("layer type")


def _add(
    name: str, family: Family, kernel: int, description: str, *, ranks: tuple[int, ...] = (2, 3)
) -> None:
    weighted = family in ("conv", "dwsep", "mbconv", "mlp")
    downsample = family not in ("identity", "mlp")
    LAYER_TYPES.register(
        name, LayerType(name, family, kernel, ranks, weighted, downsample, description)
    )


for _k in (3, 5):
    _add(f"conv{_k}x{_k}", "conv", _k, f"{_k}x{_k} convolution + BN + ReLU")
    _add(
        f"dwsep{_k}x{_k}",
        "dwsep",
        _k,
        f"depthwise-separable: {_k}x{_k} depthwise + BN + ReLU, 1x1 pointwise + BN + ReLU",
    )
    _add(
        f"mbconv{_k}x{_k}",
        "mbconv",
        _k,
        f"inverted residual (MBConv): 1x1 expand, {_k}x{_k} depthwise, 1x1 project, skip",
    )
_add("maxpool3x3", "maxpool", 3, "3x3 max pooling (no parameters, keeps the width)")
_add("avgpool3x3", "avgpool", 3, "3x3 average pooling (no parameters, keeps the width)")
_add("identity", "identity", 0, "skip: the layer is the identity (stride 1 only)", ranks=(1, 2, 3))
LAYER_TYPES.register(
    "mlp",
    LayerType("mlp", "mlp", 0, (1,), True, False, "fully connected + BN + ReLU (vector input)"),
)


def layer_type(name: str, field: str = "") -> LayerType:
    """The registered :class:`LayerType` called ``name``; unknown names list the known ones."""
    return LAYER_TYPES.get(name, field)


def accepts_rank(lt: LayerType, rank: int) -> bool:
    """Whether a layer type takes input of this rank (identity takes any)."""
    return lt.family == "identity" or rank in lt.ranks


#: How each input rank is called in messages.
RANK_NAMES = {1: "vector (F,)", 2: "sequence (C, L)", 3: "image (C, H, W)"}
