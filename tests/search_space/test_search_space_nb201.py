"""NAS-Bench-201's cell space: the string format, the params round trip, the network, its cost.

The generic suites (parametrized over ``SPACES``) sample, build, run and cost the
``nb201`` space too; this file checks what only a cell space has.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import re
from collections.abc import Callable

import optuna
import pytest
import torch
from pydantic import ValidationError
from torch.utils.flop_counter import FlopCounterMode

from nas import ConfigError, UnknownNameError
from nas.evaluators import nb201_table
from nas.search_space import (
    NB201_EDGES,
    NB201_OPS,
    CellArchitecture,
    CellSpace,
    dump_space,
    get_space,
    sample_random,
    space_from_dict,
    space_infos,
)
from nas.search_space._nb201_network import Cell

#: Index 1 of the benchmark: three conv3x3, one avg pool, two skips.
CELL = "+".join(
    (
        "|nor_conv_3x3~0|",
        "|nor_conv_3x3~0|avg_pool_3x3~1|",
        "|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
    )
)
ALL_OPS = list(itertools.product(NB201_OPS, repeat=6))


def _formula(ops: tuple[str, ...]) -> int:
    """The benchmark's parameter count with the CIFAR-10 head (shared/data/nb201/README.md)."""
    return 73_306 + 243_040 * ops.count("nor_conv_3x3") + 28_000 * ops.count("nor_conv_1x1")


def _cell(*ops: str, **skeleton: object) -> CellArchitecture:
    return CellArchitecture(ops=ops, **skeleton)  # type: ignore[arg-type]


# -- the string format ---------------------------------------------------------------------


def test_every_table_string_round_trips() -> None:
    strings = [row["arch"] for row in nb201_table()]
    assert len(strings) == len(set(strings)) == 15_625
    for text in strings:
        assert CellArchitecture.from_string(text).to_string() == text
    assert {CellArchitecture.from_string(s).ops for s in strings} == set(ALL_OPS)


def test_string_order_is_the_official_edge_order() -> None:
    arch = CellArchitecture.from_string(CELL)
    assert arch.ops == (
        "nor_conv_3x3",  # 1 <- 0
        "nor_conv_3x3",  # 2 <- 0
        "avg_pool_3x3",  # 2 <- 1
        "skip_connect",  # 3 <- 0
        "nor_conv_3x3",  # 3 <- 1
        "skip_connect",  # 3 <- 2
    )
    assert NB201_EDGES == ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
    assert arch.summary() == CELL


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("|none~0|+|none~0|none~1|", "3 nodes joined by '+'"),
        ("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|+|none~0|", "3 nodes joined by '+'"),
        ("none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "node 1 must be written"),
        ("|none~0|+|none~0|+|none~0|none~1|none~2|", "node 2 needs 2 inputs, got 1"),
        ("|none~0|+|none~1|none~0|+|none~0|none~1|none~2|", "node 2: expected 'op~0'"),
        ("|none0|+|none~0|none~1|+|none~0|none~1|none~2|", "node 1: expected 'op~0'"),
        ("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown op 'conv'; allowed: none,"),
    ],
)
def test_bad_strings_are_one_line_config_errors(text: str, words: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(words)) as info:
        CellArchitecture.from_string(text)
    assert info.value.field == "arch"
    assert "\n" not in str(info.value)


def test_unknown_op_is_rejected_with_the_allowed_ones() -> None:
    with pytest.raises(ValidationError, match="edge 2: unknown op 'conv5x5'; allowed: none"):
        _cell("none", "none", "conv5x5", "none", "none", "none")


@pytest.mark.parametrize("shape", [(3, 30, 32), (3, 32), (3, 6, 6)])
def test_input_must_be_an_image_halving_twice(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValidationError, match=r"image \(C, H, W\) input|multiples of 4"):
        _cell(*["none"] * 6, input_shape=shape)


# -- identity: canonical JSON and arch_id --------------------------------------------------


def test_arch_id_is_stable() -> None:
    arch = CellArchitecture.from_string(CELL)
    assert arch.to_json() == (
        '{"cells_per_stage":5,"channels":16,"input_shape":[3,32,32],"num_classes":10,'
        '"ops":["nor_conv_3x3","nor_conv_3x3","avg_pool_3x3","skip_connect","nor_conv_3x3",'
        '"skip_connect"]}'
    )
    assert arch.arch_id == hashlib.sha256(arch.to_json().encode()).hexdigest()[:16]
    assert arch.arch_id == "c7e18fb482f2d822"
    again = CellArchitecture.from_json(arch.to_json())
    assert again == arch and again.arch_id == arch.arch_id


def test_arch_id_changes_with_the_skeleton() -> None:
    arch = CellArchitecture.from_string(CELL)
    others = [
        arch.model_copy(update={"channels": 8}),
        arch.model_copy(update={"cells_per_stage": 1}),
        arch.model_copy(update={"num_classes": 100}),
        arch.model_copy(update={"input_shape": (1, 8, 8)}),
    ]
    assert len({a.arch_id for a in [arch, *others]}) == 5


def test_every_cell_has_its_own_arch_id() -> None:
    ids = {CellArchitecture(ops=ops).arch_id for ops in ALL_OPS[::7]}
    assert len(ids) == len(ALL_OPS[::7])


# -- the space -----------------------------------------------------------------------------


def test_space_is_registered_and_listed() -> None:
    space = get_space("nb201")
    assert isinstance(space, CellSpace)
    assert space.size() == 5**6 == 15_625
    info = {row["name"]: row for row in space_infos()}["nb201"]
    assert info["size"] == 15_625 and info["input_shape"] == [3, 32, 32]


def test_sample_and_to_params_round_trip_through_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = get_space("nb201")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        arch = space.sample(trial)
        assert (
            trial.params
            == space.to_params(arch)
            == {f"edge{i}": op for i, op in enumerate(arch.ops)}
        )
        study.tell(trial, 0.0)
        study.enqueue_trial(space.to_params(arch))
        again = study.ask()
        assert space.sample(again) == arch
        study.tell(again, 0.0)


def test_random_samples_reach_every_op_on_every_edge() -> None:
    archs = sample_random(get_space("nb201"), 300, seed=0)
    for edge in range(6):
        assert {a.ops[edge] for a in archs} == set(NB201_OPS)


def test_other_skeleton_is_not_a_member() -> None:
    space = get_space("nb201")
    arch = CellArchitecture.from_string(CELL, channels=8)
    assert not space.contains(arch)
    with pytest.raises(ConfigError, match=r"another skeleton or input .*, channels 8,") as info:
        space.to_params(arch)
    assert info.value.field == "architecture"


def test_layer_architecture_is_not_a_member_and_vice_versa() -> None:
    cell, layers = get_space("nb201"), get_space("cnn-small")
    layer_arch = sample_random(layers, 1, seed=0)[0]
    cell_arch = sample_random(cell, 1, seed=0)[0]
    assert not cell.contains(layer_arch) and not layers.contains(cell_arch)
    with pytest.raises(ConfigError, match="not a NAS-Bench-201 cell"):
        cell.to_params(layer_arch)
    with pytest.raises(ConfigError, match="a cell, not layers"):
        layers.to_params(cell_arch)


def test_for_data_keeps_the_skeleton() -> None:
    space = CellSpace(channels=8, cells_per_stage=1)
    digits = space.for_data((1, 8, 8), 10)
    assert (digits.input.shape, digits.channels, digits.cells_per_stage) == ((1, 8, 8), 8, 1)
    arch = sample_random(digits, 1, seed=0)[0]
    assert (arch.input_shape, arch.channels) == ((1, 8, 8), 8)
    assert arch.build().eval()(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    assert space.for_data((3, 32, 32), 100).input.num_classes == 100
    assert get_space("nb201").for_data((3, 32, 32), 10) == get_space("nb201")


@pytest.mark.parametrize(
    ("shape", "words"),
    [
        ((64,), r"needs image \(C, H, W\) input, got shape \[64\]"),
        ((3, 64), r"needs image \(C, H, W\) input"),
        ((1, 6, 6), "multiples of 4, got 6x6"),
    ],
)
def test_for_data_rejects_what_the_skeleton_cannot_take(shape: tuple[int, ...], words: str) -> None:
    with pytest.raises(ConfigError, match=words) as info:
        get_space("nb201").for_data(shape, 10)
    assert info.value.field == "dataset"


def test_space_from_dict_reads_a_cell_space() -> None:
    space = get_space("nb201")
    assert space_from_dict(json.loads(dump_space(space))) == space
    small = space_from_dict({"kind": "nb201", "name": "nb201-tiny", "channels": 4})
    assert isinstance(small, CellSpace) and small.channels == 4


def test_unknown_space_kind_names_the_field() -> None:
    with pytest.raises(UnknownNameError, match="unknown space kind 'nb101'; known: nb201") as info:
        space_from_dict({"kind": "nb101"}, prefix="space")
    assert info.value.field == "space.kind"


def test_cell_space_fields_are_checked() -> None:
    with pytest.raises(ConfigError) as info:
        space_from_dict({"kind": "nb201", "edges": 7}, prefix="space")
    assert (info.value.field, info.value.message) == ("space.edges", "unknown field")
    with pytest.raises(ConfigError, match="multiples of 4") as info:
        space_from_dict({"kind": "nb201", "input": {"shape": [3, 30, 30], "num_classes": 10}})
    assert info.value.field == "input.shape"


# -- the network and its cost --------------------------------------------------------------


def test_param_count_is_the_benchmark_formula_for_every_cell() -> None:
    for ops in ALL_OPS:
        assert CellArchitecture(ops=ops).cost().params == _formula(ops), ops


def test_built_modules_have_the_formula_param_count() -> None:
    for ops in random.Random(0).sample(ALL_OPS, 30):
        model = CellArchitecture(ops=ops).build()
        assert sum(p.numel() for p in model.parameters()) == _formula(ops), ops


def test_macs_match_the_flop_counter(one_thread: None) -> None:
    for ops in random.Random(1).sample(ALL_OPS, 4):
        arch = CellArchitecture(ops=ops)
        with FlopCounterMode(display=False) as counter:
            arch.build().eval()(torch.randn(1, 3, 32, 32))
        assert arch.cost().macs == counter.get_total_flops() // 2, ops


def test_cost_of_a_float_network() -> None:
    cost = CellArchitecture.from_string(CELL).cost()
    assert cost.bitops == cost.macs * 32 * 32
    assert cost.bytes == 4 * cost.params


@pytest.mark.parametrize(
    ("op", "elements"),
    [
        # A reduction holds its input, the ReLU of it (16x32x32 each) and conv_a's 32x16x16.
        ("none", 2 * 16 * 32 * 32 + 32 * 16 * 16),
        # Node 3 of a cell of convolutions: nodes 0-2, its sum, a ReLU and a conv output.
        ("nor_conv_3x3", 6 * 16 * 32 * 32),
    ],
)
def test_peak_activation_by_hand(op: str, elements: int) -> None:
    assert _cell(*[op] * 6).cost().peak_activation_bytes == 4 * elements


def test_forward_and_backward(
    unused_edges: Callable[[CellArchitecture], set[int]], one_thread: None
) -> None:
    torch.manual_seed(0)
    for arch in sample_random(get_space("nb201"), 3, seed=3):
        model = arch.build()
        out = model(torch.randn(2, 3, 32, 32))
        assert out.shape == (2, 10)
        torch.nn.functional.cross_entropy(out, torch.tensor([0, 1])).backward()
        unused = tuple(f".edges.edge{k}." for k in unused_edges(arch))
        for name, p in model.named_parameters():
            if any(u in name for u in unused):
                assert p.grad is None, name
            else:
                assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_unused_edges_get_no_gradient_but_count(
    unused_edges: Callable[[CellArchitecture], set[int]],
) -> None:
    # Node 2 feeds nothing (3 <- 2 is none): edges 2 <- 0 and 2 <- 1 are built but unused.
    arch = _cell(
        "skip_connect", "nor_conv_3x3", "nor_conv_1x1", "skip_connect", "skip_connect", "none"
    )
    assert unused_edges(arch) == {1, 2}
    assert arch.cost().params == _formula(arch.ops) == 73_306 + 243_040 + 28_000


def test_none_edges_build_no_module() -> None:
    arch = _cell("nor_conv_1x1", "none", "none", "none", "none", "skip_connect")
    cells = [m for m in arch.build().modules() if isinstance(m, Cell)]
    assert len(cells) == 15
    assert all(list(c.edges) == ["edge0", "edge5"] for c in cells)
    assert _formula(arch.ops) == 73_306 + 28_000


def test_a_cell_of_none_outputs_zeros() -> None:
    arch = _cell(*["none"] * 6)
    cell = next(m for m in arch.build().modules() if isinstance(m, Cell))
    assert len(cell.edges) == 0
    x = torch.randn(2, 16, 8, 8)
    assert torch.equal(cell(x), torch.zeros_like(x))
    assert arch.build()(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_node_sums_its_edges() -> None:
    # node1 = x, node2 = x + node1, node3 = node2 + pool(node1): 2x + pool(x)
    arch = _cell(
        "skip_connect", "skip_connect", "skip_connect", "none", "avg_pool_3x3", "skip_connect"
    )
    cell = next(m for m in arch.build().modules() if isinstance(m, Cell))
    x = torch.randn(1, 16, 8, 8)
    pool = torch.nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    assert torch.allclose(cell(x), 2 * x + pool(x))


def test_skeleton_is_the_benchmarks() -> None:
    model = CellArchitecture.from_string(CELL).build()
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert (convs[0].in_channels, convs[0].out_channels) == (3, 16)
    assert {m.out_channels for m in convs} == {16, 32, 64}
    assert sum(isinstance(m, Cell) for m in model.modules()) == 15
    assert model.head[-1].in_features == 64  # type: ignore[index]
