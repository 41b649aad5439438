"""ONNX export: checker, parity with PyTorch (float and quantized), QDQ types, kernel paths."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto
from torch import nn

from nas.evaluators import export_onnx
from nas.evaluators._export import check_model
from nas.evaluators._latency import LatencySettings, kernel_paths
from nas.search_space import (
    SPACES,
    Architecture,
    LayerSpec,
    SearchSpace,
    build_model,
    get_space,
    sample_random,
)
from nas.search_space._builder import build_layer
from nas.search_space._quant import ActQuant

SHAPES = {3: (3, 16, 16), 2: (2, 24), 1: (20,)}
#: The exporter walks the layer builder's modules; NAS-Bench-201 cells have no export
#: (test_evaluators_nb201 checks that latency refuses them in one line).
LAYER_SPACES = [n for n in SPACES.names() if isinstance(get_space(n), SearchSpace)]


def _space(name: str):
    space = get_space(name)
    return space.for_data(SHAPES[len(space.input.shape)], 10)


def _calibrated(model: nn.Module, shape: tuple[int, ...], seed: int = 0) -> nn.Module:
    """Train-mode passes fix BatchNorm statistics and activation ranges; then eval."""
    torch.manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(32, *shape))
    return model.eval()


def _float_copy(model: nn.Module) -> nn.Module:
    """The same weights with every quantizer off (32 bits)."""
    out = copy.deepcopy(model)
    for m in out.modules():
        if hasattr(m, "wbits"):
            m.wbits = 32
        if isinstance(m, ActQuant):
            m.bits = 32
    return out


def _run(proto: onnx.ModelProto, x: np.ndarray, disabled: tuple[str, ...] = ()) -> np.ndarray:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        proto.SerializeToString(),
        options,
        providers=["CPUExecutionProvider"],
        disabled_optimizers=list(disabled),
    )
    return session.run(None, {"input": x})[0]


@pytest.mark.parametrize("space_name", LAYER_SPACES)
def test_float_export_matches_pytorch_within_1e_4(space_name: str) -> None:
    space = _space(space_name)
    shape = tuple(space.input.shape)
    for arch in sample_random(space, 4, seed=1):
        model = _calibrated(build_model(arch), shape)
        exported = export_onnx(model, shape, batch_size=8, precision="float")
        check_model(exported.proto)
        x = torch.randn(8, *shape)
        with torch.no_grad():
            ref = _float_copy(model)(x).numpy()
        got = _run(exported.proto, x.numpy())
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


@pytest.mark.parametrize("space_name", LAYER_SPACES)
def test_mixed_precision_export_passes_checker_and_runs(space_name: str) -> None:
    space = _space(space_name)
    shape = tuple(space.input.shape)
    for arch in sample_random(space, 8, seed=2):
        exported = export_onnx(_calibrated(build_model(arch), shape), shape, batch_size=2)
        check_model(exported.proto)
        out = _run(
            exported.proto, np.random.default_rng(0).standard_normal((2, *shape), np.float32)
        )
        assert out.shape == (2, 10) and np.isfinite(out).all()


def _layer_model(
    family_type: str, wbits: int, abits: int, next_bits: int | None, rank: int
) -> tuple[nn.Module, tuple[int, ...]]:
    shape = {3: (8, 6, 6), 2: (8, 12), 1: (16,)}[rank]
    spec = LayerSpec(type=family_type, width=12, wbits=wbits, abits=abits)
    layer, signed = build_layer(spec, shape[0], True, rank)
    parts = [layer] + ([ActQuant(next_bits, signed)] if next_bits else [])
    return nn.Sequential(*parts), shape


def _step_bound(model: nn.Module) -> float:
    """One quantization step of the layer's accumulator (input step x largest folded weight
    step), or of its output quantizer, whichever is larger."""
    conv = model[0][0]
    bn = model[0][1]
    x_step = float(conv.act_quant.running_max) / (
        2 ** (conv.act_quant.bits - 1) - 1 if conv.act_quant.signed else 2**conv.act_quant.bits - 1
    )
    dims = tuple(range(1, conv.weight.dim()))
    w_step = conv.weight.detach().abs().amax(dim=dims) / (2 ** (conv.wbits - 1) - 1)
    gain = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().abs()
    acc = x_step * float((w_step * gain).max()) if conv.act_quant.bits < 32 else 0.0
    out = 0.0
    if len(model) > 1 and model[1].bits < 32:
        q = model[1]
        out = float(q.running_max) / (2 ** (q.bits - 1) - 1 if q.signed else 2**q.bits - 1)
    return max(acc, out)


@pytest.mark.parametrize("layer", ["conv3x3", "conv5x5", "mlp"])
@pytest.mark.parametrize(
    ("wbits", "abits", "next_bits"),
    [(8, 8, None), (8, 8, 8), (4, 4, None), (4, 4, 4), (2, 8, 8), (8, 4, 8), (16, 16, 16),
     (32, 8, 8), (8, 32, None)],
)  # fmt: skip
def test_quantized_layer_matches_pytorch_within_one_step(
    layer: str, wbits: int, abits: int, next_bits: int | None
) -> None:
    rank = 1 if layer == "mlp" else 3
    model, shape = _layer_model(layer, wbits, abits, next_bits, rank)
    torch.manual_seed(3)
    x = torch.randn(16, *shape)
    model.train()
    with torch.no_grad():
        model(x)  # calibrate on this very input: no value falls outside the range
    model.eval()
    with torch.no_grad():
        ref = model(x).numpy()
    exported = export_onnx(model, shape, batch_size=16)
    check_model(exported.proto)
    got = _run(exported.proto, x.numpy())
    bound = _step_bound(model) * 1.001 + 1e-5 * np.abs(ref).max()
    assert np.abs(got - ref).max() <= bound
    # ...and whole steps are the exception, not the rule. They come from the bias,
    # which an integer kernel (and ORT's WeightBiasQuantization) rounds to the
    # accumulator's step; PyTorch keeps it float.
    assert np.mean(np.abs(got - ref) > bound / 2) < 0.2


def _types(proto: onnx.ModelProto, op: str) -> set[int]:
    inits = {t.name: t.data_type for t in proto.graph.initializer}
    return {inits[n.input[2]] for n in proto.graph.node if n.op_type == op and n.input[2] in inits}


def test_bits_choose_the_onnx_integer_types() -> None:
    arch = Architecture(
        input_shape=(3, 8, 8),
        num_classes=10,
        stages=(
            (
                LayerSpec(type="conv3x3", width=8, wbits=8, abits=8),
                LayerSpec(type="conv3x3", width=8, wbits=4, abits=4),
                LayerSpec(type="conv3x3", width=8, wbits=2, abits=2),
                LayerSpec(type="conv3x3", width=8, wbits=16, abits=16),
            ),
        ),
    )
    proto = export_onnx(build_model(arch).eval(), (3, 8, 8)).proto
    weights = {
        t.name.split("/")[0]: t.data_type for t in proto.graph.initializer if "weight_int" in t.name
    }
    assert weights == {
        "features.0.0": TensorProto.INT8,
        "features.1.0": TensorProto.INT4,
        "features.2.0": TensorProto.INT4,
        "features.3.0": TensorProto.INT16,
    }
    # Activations are never 4-bit types (ORT rejects the graphs it builds from them);
    # the first layer's signed input is uint8 around 128.
    assert _types(proto, "QuantizeLinear") == {TensorProto.UINT8, TensorProto.UINT16}
    clips = [n.name for n in proto.graph.node if n.op_type == "Clip"]
    assert sorted(c.split("/")[0] for c in clips) == ["features.1.0", "features.2.0"]
    # low_bits="int8" keeps sub-8-bit weights in int8
    proto8 = export_onnx(build_model(arch).eval(), (3, 8, 8), low_bits="int8").proto
    assert TensorProto.INT4 not in {t.data_type for t in proto8.graph.initializer}


def test_int8_layers_run_as_integer_kernels_and_int4_as_dequantize_float() -> None:
    def arch(bits: int) -> Architecture:
        return Architecture(
            input_shape=(4, 8, 8),
            num_classes=10,
            stages=((LayerSpec(type="conv3x3", width=16, wbits=bits, abits=bits),) * 3,),
            head_wbits=bits,
            head_abits=bits,
        )

    settings = LatencySettings()
    int8 = export_onnx(build_model(arch(8)).eval(), (4, 8, 8))
    paths = kernel_paths(int8.serialize(), settings, int8.layers)
    assert [p["path"] for p in paths[:2]] == ["int8", "int8"]
    assert all(p["kernel"] in ("QLinearConv", "NhwcQLinearConv") for p in paths[:2])
    int4 = export_onnx(build_model(arch(4)).eval(), (4, 8, 8))
    paths4 = kernel_paths(int4.serialize(), settings, int4.layers)
    assert {p["path"] for p in paths4} == {"dequantize+float"}
    flt = export_onnx(build_model(arch(8)).eval(), (4, 8, 8), precision="float")
    assert {p["path"] for p in kernel_paths(flt.serialize(), settings, flt.layers)} == {"float"}


def test_unknown_module_is_a_one_line_error() -> None:
    from nas._errors import EvaluationError

    with pytest.raises(EvaluationError, match=r"^export: 1: no ONNX export for GELU$"):
        export_onnx(nn.Sequential(nn.ReLU(), nn.GELU()), (4,))


@pytest.mark.parametrize("space_name", LAYER_SPACES)
def test_mixed_precision_models_match_pytorch(space_name: str) -> None:
    """Whole mixed-precision networks: the same predictions, and errors of a step at most
    here and there. ORT's WeightBiasQuantization is off here: it rounds the float bias of
    sub-8-bit layers to the accumulator's step, a deployment choice PyTorch does not make
    (it is on when latency is measured)."""
    space = _space(space_name)
    shape = tuple(space.input.shape)
    for arch in sample_random(space, 4, seed=5):
        model = _calibrated(build_model(arch), shape)
        torch.manual_seed(1)
        x = torch.randn(64, *shape) * 0.8
        with torch.no_grad():
            ref = model(x).numpy()
        got = _run(
            export_onnx(model, shape, batch_size=64).proto, x.numpy(), ("WeightBiasQuantization",)
        )
        rel = np.abs(got - ref) / np.abs(ref).max()
        assert np.median(rel) < 1e-3
        assert np.mean(got.argmax(1) == ref.argmax(1)) >= 0.95
