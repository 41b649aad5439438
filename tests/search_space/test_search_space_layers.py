"""The layer-type registry."""

from __future__ import annotations

import pytest

from nas import UnknownNameError
from nas.search_space import LAYER_TYPES, layer_type
from nas.search_space._layers import accepts_rank


def test_unknown_layer_type_lists_the_known_ones() -> None:
    with pytest.raises(UnknownNameError) as info:
        layer_type("conv7x7", "stages.1.layers.0")
    assert info.value.field == "stages.1.layers.0"
    assert ", ".join(LAYER_TYPES.names()) in info.value.message


@pytest.mark.parametrize("name", LAYER_TYPES.names())
def test_weights_and_downsampling_follow_the_family(name: str) -> None:
    lt = layer_type(name)
    assert lt.name == name
    assert lt.has_weights == (lt.family in ("conv", "dwsep", "mbconv", "mlp"))
    assert lt.can_downsample == (lt.family not in ("identity", "mlp"))
    assert lt.uses_expansion == (lt.family == "mbconv")


@pytest.mark.parametrize(
    ("name", "image", "vector"),
    [
        ("conv3x3", True, False),
        ("maxpool3x3", True, False),
        ("mlp", False, True),
        ("identity", True, True),
    ],
)
def test_accepts_rank(name: str, image: bool, vector: bool) -> None:
    lt = layer_type(name)
    assert (accepts_rank(lt, 3), accepts_rank(lt, 1)) == (image, vector)


def test_kernels_match_the_names() -> None:
    for name in LAYER_TYPES.names("*x*"):
        k = layer_type(name).kernel
        assert name.endswith(f"{k}x{k}")


def test_duplicate_layer_type_is_rejected() -> None:
    with pytest.raises(ValueError, match="already registered"):
        LAYER_TYPES.register("conv3x3", layer_type("conv3x3"))
