"""A built network -> an ONNX model that ONNX Runtime can run, quantized layers as QDQ.

The graph is written here, node by node with ``onnx.helper``, from the modules
the builder makes (a closed set: quantized convolutions and linears, BatchNorm,
ReLU, pooling, residual adds). Torch's own exporters were measured and not used:

- ``torch.onnx.export(dynamo=True)`` takes about 1 s per small CNN (4 s cold), a
  third of the whole export-and-profile budget of a candidate, and its graph still
  needs rewriting: BatchNorm folded into the quantized weights, weights stored as
  integers, biases as int32, and sub-8-bit types, which torch's fake-quantize
  translation does not emit (it knows only the 8-bit ranges).
- the TorchScript exporter (``dynamo=False``) is deprecated and refuses any
  fake-quantize range other than (0, 255) and (-128, 127).

Writing the graph directly takes milliseconds and gives the exact pattern ONNX
Runtime's QDQ fusions look for: ``DQ(x) -> Conv(DQ(w_int), DQ(b_int32)) -> Relu
-> Q``. The numerics follow ``nas.search_space._quant``:

- weights: symmetric per output channel; BatchNorm is folded *exactly* into the
  per-channel scale (``q * s * g`` is ``q`` at scale ``s * |g|``, the sign moved
  into ``q``), its shift into the bias.
- activations: per tensor, zero point 0, the calibrated ``running_max`` of each
  quantizer. 8 and 16 bits use int8/uint8 and int16/uint16. 2 and 4 bits use
  ONNX's 4-bit types (opset 21); 2 bits add a ``Clip`` to the 2-bit range first.
  ONNX's signed types reach ``-2^(b-1)``, PyTorch's symmetric range stops at
  ``-(2^(b-1) - 1)``: an input below the calibrated range differs by one step.
- ``precision="float"`` exports every layer in float32 (BatchNorm folded), the
  baseline an int8 speed-up is measured against.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from nas._errors import EvaluationError
from nas.search_space._quant import (
    FLOAT_BITS,
    ActQuant,
    QConv1d,
    QConv2d,
    QLinear,
    quantize_weight,
)

OPSET = 21
Precision = Literal["qdq", "float"]

_EPS = 1e-8
LowBits = Literal["int4", "int8"]
# container bits -> (signed type, unsigned type)
_INT_TYPE: dict[int, tuple[int, int]] = {
    4: (TensorProto.INT4, TensorProto.UINT4),
    8: (TensorProto.INT8, TensorProto.UINT8),
    16: (TensorProto.INT16, TensorProto.UINT16),
}
_TYPE_BITS = {t: bits for bits, pair in _INT_TYPE.items() for t in pair}
_NP_TYPE: dict[int, type[np.generic]] = {
    TensorProto.INT4: np.int8,
    TensorProto.UINT4: np.uint8,
    TensorProto.INT8: np.int8,
    TensorProto.UINT8: np.uint8,
    TensorProto.INT16: np.int16,
    TensorProto.UINT16: np.uint16,
    TensorProto.INT32: np.int32,
}


@dataclass(frozen=True)
class LayerExport:
    """One weighted layer of the exported graph: where it came from and its bits.

    ``nodes`` are the names of its Conv/Gemm nodes in the exported graph;
    ``output_bits`` is the bit width its output is quantized to next (None when
    the output stays float), which decides whether ONNX Runtime can fuse it into
    an integer kernel.
    """

    layer: str
    op: str
    wbits: int
    abits: int
    output_bits: int | None
    nodes: tuple[str, ...]


@dataclass
class ExportedModel:
    """An exported model and what each weighted layer became."""

    proto: onnx.ModelProto
    input_name: str
    input_shape: tuple[int, ...]
    precision: Precision
    layers: list[LayerExport] = field(default_factory=list)

    def serialize(self) -> bytes:
        return self.proto.SerializeToString()


def export_onnx(
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    batch_size: int = 1,
    precision: Precision = "qdq",
    low_bits: LowBits = "int4",
    layer_names: dict[str, str] | None = None,
) -> ExportedModel:
    """Export a network built by :func:`nas.search_space.build_model` (in eval mode).

    ``input_shape`` is one sample's shape; the graph takes a fixed batch of
    ``batch_size``. ``layer_names`` maps module paths (``features.2``) to names
    for :attr:`ExportedModel.layers` (the layer type, say). Raises
    :class:`EvaluationError` for a module the exporter does not know.
    """
    if precision not in ("qdq", "float"):
        raise ValueError(f"precision must be 'qdq' or 'float', but got {precision!r}")
    graph = _Graph(precision == "qdq", low_bits, layer_names or {})
    shape = (batch_size, *input_shape)
    with torch.no_grad():
        out = graph.emit_module(model, "input", "")
    graph.finish(out)
    proto = helper.make_model(
        helper.make_graph(
            graph.nodes,
            "nas",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
            [onnx.ValueInfoProto(name=out)],  # typed by shape inference below
            graph.initializers,
        ),
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="nas",
    )
    proto.ir_version = 10  # opset 21's IR version, read by every ONNX Runtime >= 1.18
    inferred = onnx.shape_inference.infer_shapes(proto)
    proto.graph.output[0].CopyFrom(inferred.graph.output[0])
    del proto.graph.value_info[:]
    return ExportedModel(proto, "input", shape, precision, graph.layers)


class _Graph:
    """The nodes and initializers of the graph being written."""

    def __init__(self, quantize: bool, low_bits: LowBits, layer_names: dict[str, str]) -> None:
        self.quantize = quantize
        self.low_bits = low_bits
        self.layer_names = layer_names
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.layers: list[LayerExport] = []
        self._names: set[str] = set()

    # -- naming ---------------------------------------------------------------
    def _unique(self, name: str) -> str:
        base, i = name, 1
        while name in self._names:
            name, i = f"{base}_{i}", i + 1
        self._names.add(name)
        return name

    def node(self, op: str, inputs: list[str], name: str, **attrs: Any) -> str:
        node_name = self._unique(name)
        out = self._unique(f"{node_name}:out")
        self.nodes.append(helper.make_node(op, inputs, [out], name=node_name, **attrs))
        return out

    def constant(self, name: str, array: np.ndarray, dtype: int = TensorProto.FLOAT) -> str:
        name = self._unique(name)
        if dtype in (TensorProto.INT4, TensorProto.UINT4):
            tensor = helper.make_tensor(name, dtype, array.shape, array.flatten().tolist())
        elif dtype == TensorProto.FLOAT:
            tensor = numpy_helper.from_array(array.astype(np.float32), name)
        else:
            tensor = numpy_helper.from_array(array.astype(_NP_TYPE[dtype]), name)
        self.initializers.append(tensor)
        return name

    # -- quantization -----------------------------------------------------------
    def quant_act(self, x: str, quant: ActQuant, where: str) -> str:
        """``x`` through the quantizer's Q/DQ pair (identity at 32 bits or in float mode)."""
        bits = quant.bits
        if not self.quantize or bits >= FLOAT_BITS:
            return x
        qmin, qmax = _act_range(quant)
        scale = self.act_scale(quant)
        assert scale is not None
        container = _act_container(bits)
        if bits < container:  # clip to the narrower range the container cannot express
            lo = self.constant(f"{where}/clip_min", np.array(qmin * scale, np.float32))
            hi = self.constant(f"{where}/clip_max", np.array(qmax * scale, np.float32))
            x = self.node("Clip", [x, lo, hi], f"{where}/clip")
        dtype, zero = _act_type(container, quant.signed)
        s = self.constant(f"{where}/scale", np.array(scale, np.float32))
        z = self.constant(f"{where}/zero_point", np.array(zero), dtype)
        q = self.node("QuantizeLinear", [x, s, z], f"{where}/quantize")
        return self.node("DequantizeLinear", [q, s, z], f"{where}/dequantize")

    def act_scale(self, quant: ActQuant) -> float | None:
        if not self.quantize or quant.bits >= FLOAT_BITS:
            return None
        qmax = _act_range(quant)[1]
        return float(np.float32(float(quant.running_max.clamp_min(_EPS)) / qmax))

    def weight(
        self,
        weight: torch.Tensor,
        bits: int,
        fold: torch.Tensor | None,
        where: str,
    ) -> tuple[str, np.ndarray | None]:
        """The (BN-folded) weight: float, or int at ``bits`` through DequantizeLinear.

        Returns the weight's name and, when quantized, its per-channel scales.
        """
        w = weight.detach().double()
        gain = fold.double() if fold is not None else torch.ones(w.shape[0], dtype=torch.float64)
        view = (-1,) + (1,) * (w.dim() - 1)
        if not self.quantize or bits >= FLOAT_BITS:
            return self.constant(f"{where}/weight", (w * gain.view(view)).numpy()), None
        qmax = 2 ** (bits - 1) - 1
        dims = tuple(range(1, w.dim()))
        # The scale exactly as quantize_weight computes it (float32).
        scale32 = (weight.detach().abs().amax(dim=dims).clamp_min(_EPS) / qmax).float()
        # PyTorch's own integers: its fake-quantized weight divided by the scale.
        q = torch.round(quantize_weight(weight.detach().float(), bits) / scale32.view(view))
        sign = torch.where(gain < 0, -1.0, 1.0)
        q = q.double() * sign.view(view)
        scale = (scale32.double() * gain.abs()).float().clamp_min(1e-30).numpy()
        dtype = _INT_TYPE[_weight_container(bits, self.low_bits)][0]
        w_int = self.constant(f"{where}/weight_int", q.numpy().astype(np.int64), dtype)
        s = self.constant(f"{where}/weight_scale", scale)
        z = self.constant(f"{where}/weight_zero_point", np.zeros(len(scale), np.int64), dtype)
        return self.node("DequantizeLinear", [w_int, s, z], f"{where}/weight_dq", axis=0), scale

    def bias(
        self, bias: np.ndarray, x_scale: float | None, w_scale: np.ndarray | None, where: str
    ) -> str:
        """A float bias, or an int32 bias at ``x_scale * w_scale`` for an 8-bit layer.

        QLinearConv takes an int32 bias; any other layer keeps the float bias
        (quantizing it would only add error to a float kernel).
        """
        if x_scale is None or w_scale is None:
            return self.constant(f"{where}/bias", bias)
        scale = (np.float64(x_scale) * w_scale.astype(np.float64)).astype(np.float32)
        q = np.clip(np.rint(bias / scale.astype(np.float64)), -(2**31), 2**31 - 1)
        b = self.constant(f"{where}/bias_int32", q.astype(np.int32), TensorProto.INT32)
        s = self.constant(f"{where}/bias_scale", scale)
        z = self.constant(
            f"{where}/bias_zero_point", np.zeros(len(scale), np.int32), TensorProto.INT32
        )
        return self.node("DequantizeLinear", [b, s, z], f"{where}/bias_dq", axis=0)

    # -- modules -----------------------------------------------------------------
    def emit_module(self, module: nn.Module, x: str, path: str) -> str:
        children = list(module.named_children())
        if isinstance(module, nn.Sequential) or type(module).__name__ == "Network":
            return self._emit_sequence(children, x, path)
        if type(module).__name__ == "Residual":
            y = self.emit_module(module.body, x, _join(path, "body"))  # type: ignore[arg-type]
            return self.node("Add", [x, y], f"{path}/add")
        return self._emit_leaf(module, None, x, path)

    def _emit_sequence(self, children: list[tuple[str, nn.Module]], x: str, path: str) -> str:
        i = 0
        while i < len(children):
            name, child = children[i]
            child_path = _join(path, name)
            following = children[i + 1][1] if i + 1 < len(children) else None
            if isinstance(child, QConv1d | QConv2d | QLinear) and _is_bn(following):
                x = self._emit_leaf(child, following, x, child_path)
                i += 2
                continue
            x = self.emit_module(child, x, child_path)
            i += 1
        return x

    def _emit_leaf(self, m: nn.Module, bn: nn.Module | None, x: str, path: str) -> str:
        if isinstance(m, QConv1d | QConv2d):
            return self._conv(m, bn, x, path)
        if isinstance(m, QLinear):
            return self._linear(m, bn, x, path)
        if isinstance(m, ActQuant):
            return self.quant_act(x, m, path)
        if isinstance(m, nn.ReLU):
            return self.node("Relu", [x], f"{path}/relu")
        if isinstance(m, nn.MaxPool1d | nn.MaxPool2d):
            return self._pool("MaxPool", m, x, path)
        if isinstance(m, nn.AvgPool1d | nn.AvgPool2d):
            if m.count_include_pad or m.ceil_mode:
                raise EvaluationError(f"export: {path}: only count_include_pad=False pooling")
            return self._pool("AveragePool", m, x, path)
        if isinstance(m, nn.AdaptiveAvgPool1d | nn.AdaptiveAvgPool2d):
            size = m.output_size
            if size not in (1, (1,), (1, 1)):
                raise EvaluationError(f"export: {path}: adaptive pooling to {size} (only 1)")
            return self.node("GlobalAveragePool", [x], f"{path}/global_pool")
        if isinstance(m, nn.Flatten):
            return self.node("Flatten", [x], f"{path}/flatten", axis=1)
        if isinstance(m, nn.Identity):
            return x
        if _is_bn(m):
            return self._batchnorm(m, x, path)
        raise EvaluationError(f"export: {path or 'model'}: no ONNX export for {type(m).__name__}")

    def _fold(self, bn: nn.Module | None, channels: int) -> tuple[torch.Tensor | None, np.ndarray]:
        """BatchNorm as (per-channel gain, bias); no BN: (None, zeros)."""
        if bn is None:
            return None, np.zeros(channels)
        assert isinstance(bn, nn.BatchNorm1d | nn.BatchNorm2d)
        var, mean = bn.running_var.double(), bn.running_mean.double()  # type: ignore[union-attr]
        gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(var)
        beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(var)
        gain = gamma / torch.sqrt(var + bn.eps)
        return gain, (beta - mean * gain).numpy()

    def _inputs(
        self, m: QConv1d | QConv2d | QLinear, bn: nn.Module | None, x: str, path: str
    ) -> list[str]:
        """A weighted layer's three inputs: quantized ``x``, its (folded) weight and bias."""
        x_scale = self.act_scale(m.act_quant)
        xq = self.quant_act(x, m.act_quant, f"{path}/input")
        gain, bias = self._fold(bn, m.weight.shape[0])
        if m.bias is not None:
            bias = bias + (m.bias.detach().double() * (gain if gain is not None else 1.0)).numpy()
        w, w_scale = self.weight(m.weight, m.wbits, gain, path)
        return [xq, w, self.bias(bias, *self._int8_scales(m, x_scale, w_scale), path)]

    def _conv(self, m: QConv1d | QConv2d, bn: nn.Module | None, x: str, path: str) -> str:
        rank = 1 if isinstance(m, QConv1d) else 2
        pad = [int(p) for p in _tuple(m.padding, rank)]  # type: ignore[arg-type]
        out = self.node(
            "Conv",
            self._inputs(m, bn, x, path),
            f"{path}/conv",
            kernel_shape=list(_tuple(m.kernel_size, rank)),
            strides=list(_tuple(m.stride, rank)),
            pads=pad + pad,
            dilations=list(_tuple(m.dilation, rank)),
            group=m.groups,
        )
        self._record(path, "Conv", m.wbits, m.act_quant.bits, self.nodes[-1].name)
        return out

    def _linear(self, m: QLinear, bn: nn.Module | None, x: str, path: str) -> str:
        out = self.node("Gemm", self._inputs(m, bn, x, path), f"{path}/gemm", transB=1)
        self._record(path, "Gemm", m.wbits, m.act_quant.bits, self.nodes[-1].name)
        return out

    def _int8_scales(
        self, m: QConv1d | QConv2d | QLinear, x_scale: float | None, w_scale: np.ndarray | None
    ) -> tuple[float | None, np.ndarray | None]:
        """The scales for an int32 bias when the layer can be an 8-bit integer kernel."""
        if m.act_quant.bits > 8 or _weight_container(m.wbits, self.low_bits) != 8:
            return None, None
        return x_scale, w_scale

    def _pool(self, op: str, module: nn.Module, x: str, path: str) -> str:
        rank = 1 if isinstance(module, nn.MaxPool1d | nn.AvgPool1d) else 2
        m: Any = module  # MaxPool and AvgPool: kernel_size, stride, padding
        pad = list(_tuple(m.padding, rank))
        if op == "MaxPool" and any(d != 1 for d in _tuple(m.dilation, rank)):
            raise EvaluationError(f"export: {path}: dilated pooling")
        if getattr(m, "ceil_mode", False):
            raise EvaluationError(f"export: {path}: ceil_mode pooling")
        return self.node(
            op,
            [x],
            f"{path}/{op.lower()}",
            kernel_shape=list(_tuple(m.kernel_size, rank)),
            strides=list(_tuple(m.stride or m.kernel_size, rank)),
            pads=pad + pad,
        )

    def _batchnorm(self, bn: nn.Module, x: str, path: str) -> str:
        gain, bias = self._fold(bn, int(bn.num_features))  # type: ignore[arg-type]
        assert gain is not None
        shape = (1, -1, 1, 1)
        g = self.constant(f"{path}/bn_gain", gain.numpy().reshape(shape))
        b = self.constant(f"{path}/bn_bias", bias.reshape(shape))
        return self.node("Add", [self.node("Mul", [x, g], f"{path}/bn_mul"), b], f"{path}/bn_add")

    def _record(self, path: str, op: str, wbits: int, abits: int, node: str) -> None:
        if not self.quantize:
            wbits = abits = FLOAT_BITS
        self.layers.append(LayerExport(path, op, wbits, abits, None, (node,)))

    def finish(self, output: str) -> None:
        """Fill in each layer's ``output_bits``: is its output quantized before anything else?"""
        consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in self.nodes:
            for i in n.input:
                consumers.setdefault(i, []).append(n)
        producer = {o: n for n in self.nodes for o in n.output}
        for index, layer in enumerate(self.layers):
            out = producer_output(producer, layer.nodes[0])
            bits = _quantized_next(out, consumers, self.initializers)
            self.layers[index] = LayerExport(
                layer.layer, layer.op, layer.wbits, layer.abits, bits, layer.nodes
            )
        del output


def producer_output(producer: dict[str, onnx.NodeProto], node_name: str) -> str:
    for out, n in producer.items():
        if n.name == node_name:
            return out
    raise KeyError(node_name)


def _quantized_next(
    out: str, consumers: dict[str, list[onnx.NodeProto]], inits: list[onnx.TensorProto]
) -> int | None:
    """Bits of the QuantizeLinear reached from ``out`` through at most one Relu, else None."""
    nodes = consumers.get(out, [])
    if len(nodes) == 1 and nodes[0].op_type == "Relu":
        nodes = consumers.get(nodes[0].output[0], [])
    if len(nodes) != 1 or nodes[0].op_type != "QuantizeLinear":
        return None
    zero = next(t for t in inits if t.name == nodes[0].input[2])
    return _TYPE_BITS[zero.data_type]


def _act_range(quant: ActQuant) -> tuple[int, int]:
    """PyTorch's integer range for the quantizer (see ``nas.search_space._quant``)."""
    if quant.signed:
        return -(2 ** (quant.bits - 1) - 1), 2 ** (quant.bits - 1) - 1
    return 0, 2**quant.bits - 1


def _weight_container(wbits: int, low_bits: LowBits) -> int:
    """The integer type's width for weights at ``wbits``."""
    return 4 if wbits <= 4 and low_bits == "int4" else max(wbits, 8)


def _act_container(abits: int) -> int:
    """The integer type's width for an activation at ``abits``: 8 or 16, never 4.

    ONNX Runtime 1.32's CPU provider has no kernel that reads 4-bit activations,
    and its graph optimizer breaks on them: it fuses a uint4 tensor into a
    QLinearConv, or moves its Q/DQ pair across a MaxPool, and then rejects the
    graph it made (both seen here). So activations below 8 bits are stored as
    8-bit values clipped to their narrower range (exact); only weights use the
    4-bit types.
    """
    return 8 if abits <= 8 else 16


def _act_type(container: int, signed: bool) -> tuple[int, int]:
    """(ONNX type, zero point) of an activation; signed 8-bit is uint8 around 128.

    ONNX Runtime's CPU provider fuses QLinearConv only for uint8 activations, so
    the symmetric signed range is shifted by a zero point of 128 (exact: the
    values and the scale are unchanged).
    """
    if signed and container == 8:
        return TensorProto.UINT8, 128
    return _INT_TYPE[container][0 if signed else 1], 0


def _is_bn(m: nn.Module | None) -> bool:
    return isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d)


def _tuple(value: int | tuple[int, ...], rank: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, tuple) else (int(value),) * rank


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def check_model(proto: onnx.ModelProto) -> None:
    """``onnx.checker`` with full shape inference; raises EvaluationError with its first line."""
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EvaluationError(f"onnx.checker: {first}") from None


__all__ = ["OPSET", "ExportedModel", "LayerExport", "Precision", "check_model", "export_onnx"]
