"""Bad spaces: each is one ConfigError naming the field and what is allowed."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from nas import ConfigError, UnknownNameError
from nas.search_space import LAYER_TYPES, space_from_dict

_IMAGE_LAYERS = [n for n in LAYER_TYPES.names() if n != "mlp"]
_DOWNSAMPLING = [n for n in LAYER_TYPES.names() if n not in ("identity", "mlp")]
_BITS = "2, 4, 8, 16, 32"

Edit = Callable[[dict[str, Any]], None]


def _base() -> dict[str, Any]:
    return {
        "input": {"shape": [1, 8, 8], "num_classes": 10},
        "stages": [{"depth": [1, 2], "widths": [8, 16], "layers": ["conv3x3", "identity"]}],
    }


def _stage(**changes: Any) -> Edit:
    return lambda space: space["stages"][0].update(changes)


def _strided_stages(n: int) -> Edit:
    stage = {"depth": 1, "widths": [8], "stride": 2, "layers": ["conv3x3"]}
    return lambda space: space.update(stages=[stage] * n)


def _vector_input(layers: list[str], **stage: Any) -> Edit:
    def edit(space: dict[str, Any]) -> None:
        space["input"]["shape"] = [64]
        space["stages"][0].update(layers=layers, **stage)

    return edit


# id: (edit, expected field, words the message must hold)
_BAD: dict[str, tuple[Edit, str, list[str]]] = {
    "depth min > max": (_stage(depth=[3, 1]), "stages.0.depth", ["min <= max", "min=3, max=1"]),
    "depth zero": (_stage(depth=0), "stages.0.depth.min", ["greater than or equal to 1"]),
    "wbits": (_stage(wbits=[4, 3]), "stages.0.wbits", [_BITS, "got 3"]),
    "abits": (_stage(abits=[64]), "stages.0.abits", [_BITS, "got 64"]),
    "no bits": (_stage(wbits=[]), "stages.0.wbits", ["at least 1"]),
    "empty widths": (_stage(widths=[]), "stages.0.widths", ["at least 1"]),
    "zero width": (_stage(widths=[8, 0]), "stages.0.widths.1", ["greater than or equal to 1"]),
    "no layers": (_stage(layers=[]), "stages.0.layers", ["at least 1"]),
    "mlp on images": (
        _stage(layers=["conv3x3", "mlp"]),
        "stages.0.layers.1",
        ["'mlp'", "image", ", ".join(_IMAGE_LAYERS)],
    ),
    "conv on vectors": (_vector_input(["conv3x3"]), "stages.0.layers.0", ["identity, mlp"]),
    "stride on vectors": (_vector_input(["mlp"], stride=2), "stages.0.stride", ["stride 1"]),
    "stride, identity only": (
        _stage(layers=["identity"], stride=2),
        "stages.0.layers",
        ["stride 2", ", ".join(_DOWNSAMPLING)],
    ),
    "collapse 8x8": (_strided_stages(4), "stages.3.stride", ["total stride 16", "8x8", "0.5"]),
    "unknown field": (lambda s: s.update(colour="red"), "colour", ["unknown field"]),
    "unknown stage field": (_stage(width=[8]), "stages.0.width", ["unknown field"]),
    "missing widths": (lambda s: s["stages"][0].pop("widths"), "stages.0.widths", ["required"]),
    "missing input": (lambda s: s.pop("input"), "input", ["required"]),
    "one class": (
        lambda s: s["input"].update(num_classes=1),
        "input.num_classes",
        ["greater than or equal to 2"],
    ),
    "input rank 4": (
        lambda s: s["input"].update(shape=[1, 2, 8, 8]),
        "input.shape",
        ["(C, H, W), (C, L) or (F,)"],
    ),
    "no stages": (lambda s: s.update(stages=[]), "stages", ["at least 1"]),
    "head bits": (lambda s: s.update(head={"wbits": 3}), "head.wbits", [_BITS, "got 3"]),
    "stem bits": (lambda s: s.update(stem={"width": 8, "abits": 5}), "stem.abits", [_BITS]),
    "pooling stem": (
        lambda s: s.update(stem={"width": 8, "type": "maxpool3x3"}),
        "stem.type",
        ["weighted", "'maxpool3x3'"],
    ),
}


@pytest.mark.parametrize(("edit", "field", "words"), _BAD.values(), ids=list(_BAD))
def test_bad_space(edit: Edit, field: str, words: list[str]) -> None:
    space = _base()
    edit(space)
    with pytest.raises(ConfigError) as info:
        space_from_dict(space)
    assert info.value.field == field
    for word in words:
        assert word in info.value.message
    assert "\n" not in str(info.value)


def test_base_space_is_valid() -> None:
    """The edits above each break a space that is otherwise fine."""
    assert space_from_dict(_base()).size() > 0


def test_unknown_layer_type_lists_the_known_ones() -> None:
    space = _base()
    space["stages"][0]["layers"] = ["conv3x3", "conv7x7"]
    with pytest.raises(UnknownNameError) as info:
        space_from_dict(space)
    assert info.value.field == "stages.0.layers.1"
    assert info.value.name == "conv7x7"
    assert f"known: {', '.join(LAYER_TYPES.names())}" in info.value.message


def test_prefix_leads_every_field() -> None:
    space = copy.deepcopy(_base())
    space["stages"][0]["layers"] = ["nope"]
    with pytest.raises(UnknownNameError) as info:
        space_from_dict(space, prefix="space")
    assert info.value.field == "space.stages.0.layers.0"
    with pytest.raises(ConfigError) as info2:
        space_from_dict({**_base(), "colour": "red"}, prefix="space")
    assert info2.value.field == "space.colour"
