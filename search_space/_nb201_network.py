"""The NAS-Bench-201 network of a cell, and its analytic cost.

The skeleton is the benchmark's (AutoDL-Projects ``TinyNetwork`` with
``InferCell``): a stem (conv3x3 + BN), then 3 stages of ``cells_per_stage``
cells at ``channels`` x 1, 2, 4, a ResNet reduction block between stages
(ReLU-conv3x3/s2-BN, ReLU-conv3x3-BN, shortcut 2x2 average pooling + conv1x1
without BN), BN + ReLU, global average pooling and a linear head.

Ops: ``nor_conv_kxk`` is ReLU -> conv kxk (no bias) -> BN (affine);
``avg_pool_3x3`` is a 3x3 average pooling with stride 1 that does not count the
padding; ``skip_connect`` is the identity; ``none`` is the zero op, so no module is
built for it and it adds nothing to its node (a node with no other input is zeros,
as the benchmark's ``x * 0``). With a 3-channel input and 10 classes the parameter
count is the benchmark's ``73,306 + 243,040 n(conv3x3) + 28,000 n(conv1x1)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from nas.search_space._builder import Network
from nas.search_space._cost import Cost
from nas.search_space._nb201 import NB201_EDGES

if TYPE_CHECKING:
    from nas.search_space._nb201 import CellArchitecture

_FLOAT_BYTES = 4
_KERNEL = {"nor_conv_1x1": 1, "nor_conv_3x3": 3}
#: Tensors an op makes while it runs, besides its input: a convolution's ReLU output
#: and its convolution output (BN's output then becomes the node's sum), a pooling's output.
_TEMPORARIES = {
    "none": 0,
    "skip_connect": 0,
    "nor_conv_1x1": 2,
    "nor_conv_3x3": 2,
    "avg_pool_3x3": 1,
}


def _relu_conv_bn(c_in: int, c_out: int, k: int, stride: int) -> nn.Sequential:
    conv = nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False)
    return nn.Sequential(nn.ReLU(), conv, nn.BatchNorm2d(c_out))


def _op(name: str, c: int) -> nn.Module:
    if name in _KERNEL:
        return _relu_conv_bn(c, c, _KERNEL[name], 1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    return nn.Identity()


class Cell(nn.Module):
    """Node ``j`` = sum over edges ``i -> j`` of ``op(node i)``; the output is node 3.

    Only the chosen ops are built: ``edges`` holds ``edge{k}`` for every edge ``k``
    (official order) whose op is not ``none``.
    """

    def __init__(self, ops: tuple[str, ...], c: int) -> None:
        super().__init__()
        self.edges = nn.ModuleDict(
            {f"edge{k}": _op(op, c) for k, op in enumerate(ops) if op != "none"}
        )
        self.wiring = [(f"edge{k}", NB201_EDGES[k]) for k, op in enumerate(ops) if op != "none"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for j in (1, 2, 3):
            terms = [self.edges[key](nodes[src]) for key, (dst, src) in self.wiring if dst == j]
            total = terms[0] if terms else torch.zeros_like(x)
            for term in terms[1:]:
                total = total + term
            nodes.append(total)
        return nodes[3]


class ResidualReduction(nn.Module):
    """NB201's ``ResNetBasicblock`` with stride 2: ``c_in`` -> ``c_out`` channels, half the size."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = _relu_conv_bn(c_in, c_out, 3, 2)
        self.conv_b = _relu_conv_bn(c_out, c_out, 3, 1)
        self.shortcut = nn.Sequential(
            nn.AvgPool2d(2, stride=2), nn.Conv2d(c_in, c_out, 1, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.conv_b(self.conv_a(x))


def build_cell_network(arch: CellArchitecture) -> nn.Module:
    """The network of ``arch``: ``(N, *arch.input_shape)`` -> ``(N, num_classes)`` logits.

    ``features`` runs up to the last BN + ReLU (what Zen-score reads), ``head`` pools
    and classifies, as in the layer spaces' builder.
    """
    c = arch.channels
    stem = nn.Sequential(
        nn.Conv2d(arch.input_shape[0], c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
    )
    blocks: list[nn.Module] = [stem]
    for stage in range(3):
        if stage:
            blocks.append(ResidualReduction(c, 2 * c))
            c *= 2
        blocks += [Cell(arch.ops, c) for _ in range(arch.cells_per_stage)]
    blocks.append(nn.Sequential(nn.BatchNorm2d(c), nn.ReLU()))
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, arch.num_classes))
    return Network(nn.Sequential(*blocks), head)


def cell_cost(arch: CellArchitecture) -> Cost:
    """The :class:`~nas.search_space.Cost` of ``arch``'s network, without building it.

    As for layer spaces: ``params`` counts every trainable parameter of the
    built module (BN's affine ones and the head's bias included); ``macs`` the
    multiply-accumulates of convolutions and the linear head at batch 1 (pooling,
    BN, ReLU and additions not counted); the network is float, so ``bitops`` is
    ``macs * 32 * 32`` and ``bytes`` is 4 per parameter.

    ``peak_activation_bytes`` is an estimate at batch 1, 4 bytes an element: the
    most elements alive at once in any block. The stem holds its input and output;
    a reduction its input (kept for the shortcut), the ReLU of it and the strided
    convolution's output. While a cell computes node ``j`` it holds every earlier
    node that an edge into node ``j`` or later still reads, node ``j``'s running
    sum, and the temporaries of the op being run (2 for a convolution, 1 for a
    pooling, 0 for skip), each tensor ``c x h x w``.
    """
    c_in, h, w = arch.input_shape
    c, hw = arch.channels, h * w
    params, macs = 9 * c_in * c + 2 * c, 9 * c_in * c * hw
    peak = (c_in + c) * hw
    for stage in range(3):
        if stage:  # conv_a (3x3, stride 2), conv_b (3x3), shortcut conv1x1; BN after conv_a/b
            params += 9 * c * 2 * c + 9 * (2 * c) ** 2 + c * 2 * c + 2 * (2 * c) * 2
            macs += (9 * c * 2 * c + 9 * (2 * c) ** 2 + c * 2 * c) * (hw // 4)
            peak = max(peak, 2 * c * hw + 2 * c * (hw // 4))
            c, hw = 2 * c, hw // 4
        for op in arch.ops:
            if op in _KERNEL:
                k2 = _KERNEL[op] ** 2
                params += arch.cells_per_stage * (k2 * c * c + 2 * c)
                macs += arch.cells_per_stage * k2 * c * c * hw
        peak = max(peak, _cell_tensors(arch.ops) * c * hw)
    params += 2 * c + c * arch.num_classes + arch.num_classes  # last BN, head
    macs += c * arch.num_classes
    return Cost(
        params=params,
        macs=macs,
        bitops=macs * 32 * 32,
        bytes=_FLOAT_BYTES * params,
        peak_activation_bytes=_FLOAT_BYTES * peak,
    )


def _cell_tensors(ops: tuple[str, ...]) -> int:
    """The most ``c x h x w`` tensors a cell holds at once (see :func:`cell_cost`)."""
    live = [(edge, op) for edge, op in zip(NB201_EDGES, ops, strict=True) if op != "none"]
    peak = 1
    for j in (1, 2, 3):
        kept = len({src for (dst, src), _ in live if dst >= j and src < j})
        temporaries = max((_TEMPORARIES[op] for (dst, _), op in live if dst == j), default=0)
        peak = max(peak, kept + 1 + temporaries)
    return peak
