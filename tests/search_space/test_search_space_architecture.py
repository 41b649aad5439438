"""Architectures: canonical JSON, the JSON round trip and the network id."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from nas.search_space import SPACES, Architecture, LayerSpec, SearchSpace, get_space

PROPERTY = settings(
    max_examples=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

CONV = LayerSpec(type="conv3x3", width=8, wbits=8, abits=8)
MBCONV = LayerSpec(type="mbconv3x3", width=16, stride=2, expansion=6, wbits=4, abits=8)
POOL = LayerSpec(type="maxpool3x3", width=16, stride=2)


def _arch(stages: tuple[tuple[LayerSpec, ...], ...] = ((CONV, MBCONV), (POOL,))) -> Architecture:
    return Architecture(
        input_shape=(1, 8, 8),
        num_classes=10,
        stem=CONV,
        stages=stages,
        head_wbits=8,
        head_abits=8,
    )


@pytest.mark.parametrize("space_name", SPACES.names())
@PROPERTY
@given(data=st.data())
def test_json_round_trip(
    space_name: str,
    draw_arch: Callable[[SearchSpace, st.DataObject], Architecture],
    data: st.DataObject,
) -> None:
    arch = draw_arch(get_space(space_name), data)
    again = type(arch).from_json(arch.to_json())
    assert again == arch
    assert again.arch_id == arch.arch_id
    assert again.to_json() == arch.to_json()


def _assert_sorted_keys(value: Any) -> None:
    if isinstance(value, dict):
        assert list(value) == sorted(value)
        for item in value.values():
            _assert_sorted_keys(item)
    elif isinstance(value, list):
        for item in value:
            _assert_sorted_keys(item)


def test_canonical_json_has_sorted_keys_and_no_whitespace() -> None:
    text = _arch().to_json()
    assert not any(c.isspace() for c in text)
    _assert_sorted_keys(json.loads(text))  # json.loads keeps the text's key order


def test_arch_id_hashes_the_flattened_network() -> None:
    arch = _arch()
    network = arch.model_dump(mode="json")
    del network["stages"]
    network["layers"] = [layer.model_dump(mode="json") for layer in (CONV, MBCONV, POOL)]
    text = json.dumps(network, sort_keys=True, separators=(",", ":"))
    assert arch.arch_id == hashlib.sha256(text.encode()).hexdigest()[:16]


def test_arch_id_ignores_the_stage_partition() -> None:
    one, other = _arch(((CONV, MBCONV), (POOL,))), _arch(((CONV,), (MBCONV, POOL)))
    assert one != other  # different points of a space...
    assert one.arch_id == other.arch_id  # ...describing the same network


_CHANGES: dict[str, Callable[[Architecture], Architecture]] = {
    "layer wbits": lambda a: _arch(((CONV, MBCONV.model_copy(update={"wbits": 8})), (POOL,))),
    "layer abits": lambda a: _arch(((CONV.model_copy(update={"abits": 4}), MBCONV), (POOL,))),
    "width": lambda a: _arch(((CONV.model_copy(update={"width": 9}), MBCONV), (POOL,))),
    "expansion": lambda a: _arch(((CONV, MBCONV.model_copy(update={"expansion": 3})), (POOL,))),
    "stride": lambda a: _arch(((CONV, MBCONV), (POOL.model_copy(update={"stride": 1}),))),
    "type": lambda a: _arch(((CONV, MBCONV), (POOL.model_copy(update={"type": "avgpool3x3"}),))),
    "layer order": lambda a: _arch(((MBCONV, CONV.model_copy(update={"width": 16})), (POOL,))),
    "head wbits": lambda a: a.model_copy(update={"head_wbits": 4}),
    "head abits": lambda a: a.model_copy(update={"head_abits": 16}),
    "num classes": lambda a: a.model_copy(update={"num_classes": 11}),
    "input shape": lambda a: a.model_copy(update={"input_shape": (3, 8, 8)}),
    "no stem": lambda a: a.model_copy(update={"stem": None}),
}


@pytest.mark.parametrize("change", _CHANGES.values(), ids=list(_CHANGES))
def test_arch_id_changes_with_any_field(change: Callable[[Architecture], Architecture]) -> None:
    arch = _arch()
    assert change(arch).arch_id != arch.arch_id


def test_arch_id_is_16_hex_digits() -> None:
    arch_id = _arch().arch_id
    assert len(arch_id) == 16
    int(arch_id, 16)


def test_summaries() -> None:
    assert MBCONV.summary() == "mbconv3x3(e6)x16/s2@w4a8"
    assert POOL.summary() == "maxpool3x3x16/s2"
    assert _arch().summary() == "conv3x3x8@w8a8 mbconv3x3(e6)x16/s2@w4a8 | maxpool3x3x16/s2"


def test_layers_flatten_the_stages() -> None:
    assert _arch().layers == (CONV, MBCONV, POOL)


def test_architecture_is_frozen_and_strict() -> None:
    with pytest.raises(ValidationError):
        _arch().num_classes = 3  # type: ignore[misc]
    with pytest.raises(ValidationError, match="extra"):
        Architecture.model_validate({**_arch().model_dump(), "color": "red"})
    with pytest.raises(ValidationError, match="greater than or equal to 2"):
        _arch().model_validate({**_arch().model_dump(), "num_classes": 1})


_INCONSISTENT: dict[str, tuple[LayerSpec, str]] = {
    "bits outside the set": (CONV.model_copy(update={"wbits": 3}), "bits must be one of"),
    "pool width differs from its input": (POOL.model_copy(update={"width": 9}), "width must equal"),
    "identity with stride": (
        LayerSpec(type="identity", width=16, stride=2),
        "stride must be 1",
    ),
    "bits on a parameter-free layer": (
        POOL.model_copy(update={"wbits": 8}),
        "parameter-free layer has wbits = abits = 32",
    ),
    "expansion on a conv": (CONV.model_copy(update={"expansion": 3}), "expansion must be 1"),
    "unknown type": (CONV.model_copy(update={"type": "conv7x7"}), "unknown layer type"),
    "mlp on an image": (LayerSpec(type="mlp", width=8), "does not take input of rank 3"),
}


@pytest.mark.parametrize("layer, message", _INCONSISTENT.values(), ids=list(_INCONSISTENT))
def test_inconsistent_architectures_are_rejected(layer: LayerSpec, message: str) -> None:
    data = _arch().model_dump()
    data["stages"] = [[CONV.model_dump(), MBCONV.model_dump()], [layer.model_dump()]]
    with pytest.raises(ValidationError, match=message):
        Architecture.model_validate(data)
