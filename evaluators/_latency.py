"""Measured latency on ONNX Runtime: the hardware fingerprint, the protocol, the evaluator.

The protocol (:class:`LatencySettings`; defaults follow the issue that asked
for them): export the candidate (:mod:`nas.evaluators._export`), then in
``processes`` fresh Python processes, one after another, run
:mod:`nas.evaluators._ort_runner` on it: a session with one intra-op thread,
sequential execution, full graph optimization and IOBinding; warm-up of at
least 10 runs *and* 0.5 s; 200 timed runs. Each process reports p10, median and
p90 of its runs; the reported figure of each is the median across processes.
``latency_ms`` is the p10: the least disturbed runs on a machine that is never
quiet, the estimator that repeats best.

A :class:`Hardware` fingerprint (CPU model, cores, ORT version, execution
provider, threads, batch size, precision) keys every result: a candidate
profiled on this fingerprint is never profiled again, another fingerprint
measures again.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

import onnx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from nas._errors import ConfigError, EvaluationError
from nas.evaluators._base import EvalContext, Evaluator, register_evaluator
from nas.evaluators._export import ExportedModel, LayerExport, export_onnx
from nas.evaluators._files import restore
from nas.evaluators._ort_runner import PROVIDERS, make_session
from nas.search_space._architecture import Architecture

if TYPE_CHECKING:
    from nas.search_space import AnyArchitecture

_RUNNER = Path(__file__).with_name("_ort_runner.py")
#: ORT operators that compute in integers (per layer: the layer "ran as int8").
INT_KERNELS = frozenset(
    {
        "QLinearConv",
        "NhwcQLinearConv",
        "QLinearMatMul",
        "QGemm",
        "ConvInteger",
        "MatMulInteger",
        "MatMulIntegerToFloat",
        "DynamicQuantizeMatMul",
    }
)
_LAYOUT_OPS = frozenset({"Transpose", "ReorderInput", "ReorderOutput", "QuantizeLinear"})


@dataclass(frozen=True)
class Hardware:
    """What a latency depends on besides the model: stored with every latency row."""

    cpu: str
    cores: int
    ort_version: str
    provider: str
    threads: int
    batch_size: int
    precision: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _gpu_name() -> str:
    try:
        import torch

        return str(torch.cuda.get_device_name(0)) if torch.cuda.is_available() else "no GPU"
    except Exception:  # pragma: no cover - a broken CUDA install
        return "unknown GPU"


def available_providers() -> list[str]:
    """The short names (cpu, cuda, tensorrt) of the providers this ONNX Runtime has."""
    import onnxruntime as ort

    have = set(ort.get_available_providers())
    return [name for name, full in PROVIDERS.items() if full in have]


class LatencySettings(BaseModel):
    """The measurement protocol; every field changes the fingerprint."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    runs: int = Field(default=200, ge=1, description="timed runs per process")
    warmup_runs: int = Field(default=10, ge=0, description="at least this many warm-up runs")
    warmup_seconds: float = Field(default=0.5, ge=0, description="and at least this long")
    processes: int = Field(default=3, ge=1, description="fresh processes; the median is taken")
    threads: int = Field(default=1, ge=1, description="ONNX Runtime intra-op threads")
    provider: Literal["cpu", "cuda", "tensorrt"] = "cpu"
    batch_size: int = Field(default=1, ge=1, description="batch of the exported model")
    precision: Literal["qdq", "float"] = Field(
        default="qdq", description="qdq: quantized layers as QuantizeLinear/DequantizeLinear"
    )
    low_bits: Literal["int4", "int8"] = Field(
        default="int4", description="weights below 8 bits stored as int4, or in int8"
    )
    reference: bool = Field(
        default=False, description="interleave a fixed reference model; adds latency_ratio"
    )
    mode: Literal["measure", "predict", "auto"] = Field(
        default="measure",
        description="predict: the calibrated predictor (nas profile --calibrate); auto: "
        "predict, and measure the candidates that would enter the front or sit near a limit",
    )
    margin: float = Field(
        default=0.2, gt=0, description="auto: 'near a limit' means within this fraction of it"
    )

    @field_validator("provider")
    @classmethod
    def _provider_available(cls, value: str) -> str:
        if value not in available_providers():
            raise ValueError(
                f"execution provider {value!r} is not in this onnxruntime "
                f"(install onnxruntime-gpu for cuda/tensorrt); available: "
                f"{', '.join(available_providers())}"
            )
        return value

    def precision_label(self) -> str:
        return "float" if self.precision == "float" else f"qdq-{self.low_bits}"

    def hardware(self) -> Hardware:
        import onnxruntime as ort

        cpu = cpu_model() if self.provider == "cpu" else f"{cpu_model()} + {_gpu_name()}"
        return Hardware(
            cpu=cpu,
            cores=os.cpu_count() or 1,
            ort_version=ort.__version__,
            provider=self.provider,
            threads=self.threads,
            batch_size=self.batch_size,
            precision=self.precision_label(),
        )

    def fingerprint(self, hardware: Hardware | None = None) -> str:
        """SHA-256 hex of the hardware and the protocol: equal means comparable numbers."""
        payload = {
            "hardware": (hardware or self.hardware()).as_dict(),
            "protocol": self.model_dump(mode="json", exclude={"mode", "margin"}),
            "version": 1,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Profile:
    """A measured latency: median across processes of each process's percentiles."""

    p10_ms: float
    median_ms: float
    p90_ms: float
    runs: int
    processes: int
    seconds: float
    reference_ratio: float | None = None
    per_process: tuple[dict[str, float], ...] = ()
    kernel_paths: list[dict[str, Any]] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        out = {
            "latency_ms": self.p10_ms,
            "latency_median_ms": self.median_ms,
            "latency_p90_ms": self.p90_ms,
            "int8_share": int8_share(self.kernel_paths),
        }
        if self.reference_ratio is not None:
            out["latency_ratio"] = self.reference_ratio
        return out


def int8_share(paths: Sequence[dict[str, Any]]) -> float:
    """The share of 8-bit layers (8-bit weights and activations) ORT ran as integer kernels."""
    eight = [p for p in paths if p.get("wbits") == 8 and p.get("abits") == 8]
    if not eight:
        return 0.0
    return sum(p["path"] == "int8" for p in eight) / len(eight)


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def run_protocol(
    models: Sequence[bytes], settings: LatencySettings, *, processes: int | None = None
) -> list[list[dict[str, Any]]]:
    """Time every model in ``processes`` fresh processes; per model, each process's result.

    All models are timed in every process (one after another), so a batch of
    models pays for Python's start-up once per process.
    """
    n = settings.processes if processes is None else processes
    with tempfile.TemporaryDirectory(prefix="nas-latency-") as tmp:
        paths = []
        for i, model in enumerate(models):
            path = Path(tmp, f"model{i}.onnx")
            path.write_bytes(model)
            paths.append(str(path))
        request: dict[str, Any] = {
            "models": paths,
            "provider": settings.provider,
            "threads": settings.threads,
            "warmup_runs": settings.warmup_runs,
            "warmup_seconds": settings.warmup_seconds,
            "runs": settings.runs,
            "reference": None,
        }
        if settings.reference:
            ref = Path(tmp, "reference.onnx")
            ref.write_bytes(reference_model(settings.batch_size))
            request["reference"] = str(ref)
        request_path = Path(tmp, "request.json")
        request_path.write_text(json.dumps(request), encoding="utf-8")
        per_model: list[list[dict[str, Any]]] = [[] for _ in models]
        for _ in range(n):
            for i, result in enumerate(_run_runner(request_path)):
                per_model[i].append(result)
    return per_model


def _run_runner(request_path: Path) -> list[dict[str, Any]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(_RUNNER), str(request_path)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise EvaluationError(f"latency: the measuring process failed: {tail}")
    results: list[dict[str, Any]] = json.loads(proc.stdout.strip().splitlines()[-1])["results"]
    return results


def summarize(results: Sequence[dict[str, Any]], runs: int, seconds: float) -> Profile:
    """One model's per-process results -> a :class:`Profile`; an ORT error raises."""
    for r in results:
        if "error" in r:
            raise EvaluationError(f"onnxruntime cannot run the model: {r['error']}")
    ratio = None
    if all("reference_median_ms" in r for r in results):
        ratio = _median([r["median_ms"] / r["reference_median_ms"] for r in results])
    return Profile(
        p10_ms=_median([r["p10_ms"] for r in results]),
        median_ms=_median([r["median_ms"] for r in results]),
        p90_ms=_median([r["p90_ms"] for r in results]),
        runs=runs,
        processes=len(results),
        seconds=seconds,
        reference_ratio=ratio,
        per_process=tuple(results),
    )


def profile_onnx(
    model: bytes,
    settings: LatencySettings,
    layers: Sequence[LayerExport] = (),
    *,
    processes: int | None = None,
) -> Profile:
    """Check, then time ``model`` under the protocol; record each layer's kernel path."""
    start = time.perf_counter()
    paths = kernel_paths(model, settings, layers)  # also: a clear error if ORT cannot load it
    results = run_protocol([model], settings, processes=processes)[0]
    profile = summarize(results, settings.runs, time.perf_counter() - start)
    return Profile(**{**profile.__dict__, "kernel_paths": paths})


def optimized_graph(model: bytes, settings: LatencySettings) -> onnx.ModelProto:
    """The graph ONNX Runtime really runs, after its optimizations (fusions, QDQ -> int8)."""
    with tempfile.TemporaryDirectory(prefix="nas-optimized-") as tmp:
        out = Path(tmp, "optimized.onnx")
        try:
            make_session(model, settings.provider, settings.threads, str(out))
        except Exception as exc:  # onnxruntime's own exception types
            text = str(exc).strip().splitlines()
            raise EvaluationError(
                f"onnxruntime cannot run the model: {text[0] if text else type(exc).__name__}"
            ) from None
        return onnx.load(str(out))


def kernel_paths(
    model: bytes, settings: LatencySettings, layers: Sequence[LayerExport] = ()
) -> list[dict[str, Any]]:
    """Per weighted layer, the kernel ONNX Runtime runs and its precision path.

    ``path`` is ``int8`` (an integer kernel: QLinearConv, QGemm, ...), ``float``
    (a float kernel on float weights) or ``dequantize+float`` (quantized weights
    dequantized, then a float kernel: no speed-up from the bits). Layers come
    from the export; for a model from a file, every Conv/Gemm/MatMul node is one.
    """
    graph = optimized_graph(model, settings).graph
    compute = [
        n for n in graph.node if n.op_type not in _LAYOUT_OPS and n.op_type != "DequantizeLinear"
    ]
    if not layers:
        layers = _layers_of(onnx.load_from_string(model).graph)
    out = []
    for layer in layers:
        name = layer.nodes[0]
        ran = [_kernel_name(n) for n in compute if _same_node(n.name, name)]
        kernel = ran[0] if ran else "fused"  # folded into a neighbour's kernel
        if kernel in INT_KERNELS:
            path = "int8"
        elif layer.wbits < 32:
            path = "dequantize+float"
        else:
            path = "float"
        out.append(
            {
                "layer": layer.layer,
                "op": layer.op,
                "wbits": layer.wbits,
                "abits": layer.abits,
                "kernel": kernel,
                "path": path,
            }
        )
    return out


_INT_BITS: dict[int, int] = {
    onnx.TensorProto.INT4: 4,
    onnx.TensorProto.UINT4: 4,
    onnx.TensorProto.INT8: 8,
    onnx.TensorProto.UINT8: 8,
    onnx.TensorProto.INT16: 16,
    onnx.TensorProto.UINT16: 16,
}


def _layers_of(graph: onnx.GraphProto) -> list[LayerExport]:
    """The weighted layers of a model from a file, with bits read from its QDQ pairs."""
    producer = {o: n for n in graph.node for o in n.output}
    types = {t.name: t.data_type for t in graph.initializer}

    def bits(value: str) -> int:
        node = producer.get(value)
        if node is None or node.op_type != "DequantizeLinear":
            return 32
        zero = node.input[2] if len(node.input) > 2 else ""
        dtype = types.get(zero) or types.get(node.input[0])
        if dtype is None and node.input[0] in producer:  # DQ(Q(x)): the Q's zero point
            q = producer[node.input[0]]
            dtype = types.get(q.input[2]) if len(q.input) > 2 else onnx.TensorProto.UINT8
        return _INT_BITS.get(dtype or 0, 8)

    return [
        LayerExport(
            n.name or n.output[0], n.op_type, bits(n.input[1]), bits(n.input[0]), None, (n.name,)
        )
        for n in graph.node
        if n.op_type in ("Conv", "Gemm", "MatMul") and len(n.input) > 1
    ]


def _same_node(optimized: str, exported: str) -> bool:
    """ORT keeps a fused node's name, or adds ``_token_N``, or names NCHWc nodes by output."""
    return optimized == exported or optimized.startswith((f"{exported}_", f"{exported}:"))


def _kernel_name(node: onnx.NodeProto) -> str:
    return f"Nchwc{node.op_type}" if node.domain == "com.microsoft.nchwc" else node.op_type


def reference_model(batch_size: int = 1) -> bytes:
    """A fixed float model (two 3x3 convolutions, 16 channels, 16x16) to time against."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((16, 16, 3, 3)).astype(np.float32), f"w{i}")
        for i in range(2)
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["h"], pads=[1, 1, 1, 1], name="conv0"),
        helper.make_node("Relu", ["h"], ["r"], name="relu0"),
        helper.make_node("Conv", ["r", "w1"], ["y"], pads=[1, 1, 1, 1], name="conv1"),
    ]
    shape = [batch_size, 16, 16, 16]
    graph = helper.make_graph(
        nodes,
        "reference",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def export_arch(arch: Architecture, settings: LatencySettings, seed: int = 0) -> ExportedModel:
    """Build ``arch`` (weights from ``seed``; latency does not depend on their values), export."""
    return export_onnx(
        restore(arch, seed=seed),
        arch.input_shape,
        batch_size=settings.batch_size,
        precision=settings.precision,
        low_bits=settings.low_bits,
    )


class LatencyCache(Protocol):
    """Where measured profiles are kept (the store's ``latency_profiles`` table)."""

    def get_latency_profile(self, arch_id: str, fingerprint: str) -> Any: ...

    def put_latency_profile(self, arch_id: str, fingerprint: str, **fields: Any) -> Any: ...


@register_evaluator
class Latency(Evaluator):
    """Latency measured on ONNX Runtime (or predicted by the calibrated predictor)."""

    name = "latency"
    description = "ONNX Runtime latency (p10 of 200 runs, median of 3 processes), ms"
    metrics: ClassVar[tuple[str, ...]] = (
        "latency_ms",
        "latency_median_ms",
        "latency_p90_ms",
        "int8_share",
    )
    directions: ClassVar[dict[str, Any]] = {
        "latency_ms": "minimize",
        "latency_median_ms": "minimize",
        "latency_p90_ms": "minimize",
        "int8_share": "maximize",
    }
    Settings = LatencySettings

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.protocol: LatencySettings = self._settings  # type: ignore[assignment]
        self.hardware = self.protocol.hardware()
        self.hardware_fingerprint = self.protocol.fingerprint(self.hardware)
        if self.protocol.reference:
            self.metrics = (*type(self).metrics, "latency_ratio")  # type: ignore[misc]
            self.directions = {**type(self).directions, "latency_ratio": "minimize"}  # type: ignore[misc]
        if self.protocol.mode in ("predict", "auto"):
            self.metrics = ("latency_ms", "latency_measured")  # type: ignore[misc]
            self.directions = {"latency_ms": "minimize", "latency_measured": "maximize"}  # type: ignore[misc]
        if self.protocol.mode == "auto":
            self.confirm_metrics = ("latency_ms",)
            self.confirm_margin = self.protocol.margin
        self.cache: LatencyCache | None = None
        self.predictor: Any = None

    def attach_store(self, store: Any) -> None:
        """Keep profiles in (and reuse them from) ``store``'s latency tables."""
        self.cache = store
        if self.protocol.mode in ("predict", "auto"):
            from nas.evaluators._predictor import LatencyPredictor

            self.predictor = LatencyPredictor.load(store, self.protocol)
            if self.predictor is None:
                raise ConfigError(
                    "evaluators.latency.mode",
                    "predict needs this machine's predictor in the database: "
                    "run `nas profile --calibrate` first (or use mode measure)",
                )

    def fingerprint(self, ctx: EvalContext) -> str:
        """The hardware and the protocol (+ the mode): the data set does not matter."""
        return hashlib.sha256(
            f"{self.hardware_fingerprint}:{self.protocol.mode}:{self.version}".encode()
        ).hexdigest()

    def _evaluate(self, arch: AnyArchitecture, ctx: EvalContext) -> dict[str, float]:
        arch = layer_architecture(arch)
        if self.protocol.mode in ("predict", "auto"):
            if self.predictor is None:
                raise ConfigError(
                    "evaluators.latency.mode",
                    "predict needs a calibrated predictor: run `nas profile --calibrate` first",
                )
            if self.cache is not None:  # a measurement beats a prediction
                stored = self.cache.get_latency_profile(arch.arch_id, self.hardware_fingerprint)
                if stored is not None:
                    return {"latency_ms": stored.p10_ms, "latency_measured": 1.0}
            return {"latency_ms": self.predictor.predict(arch), "latency_measured": 0.0}
        return self.measure(arch, ctx.seed).metrics()

    def confirm(self, arch: AnyArchitecture, ctx: EvalContext) -> dict[str, float]:
        """Mode auto: measure ``arch`` (or read its stored profile) instead of predicting."""
        return {"latency_ms": self.measure(arch, ctx.seed).p10_ms, "latency_measured": 1.0}

    def measure(self, arch: AnyArchitecture, seed: int = 0) -> Profile:
        """The profile of ``arch`` on this fingerprint: stored, or measured now (then stored)."""
        arch = layer_architecture(arch)
        if self.cache is not None:
            stored = self.cache.get_latency_profile(arch.arch_id, self.hardware_fingerprint)
            if stored is not None:
                return profile_from_record(stored)
        exported = export_arch(arch, self.protocol, seed)
        profile = profile_onnx(exported.serialize(), self.protocol, exported.layers)
        if self.cache is not None:
            store_profile(
                self.cache, arch.arch_id, self.hardware_fingerprint, self.hardware, profile
            )
        return profile


def layer_architecture(arch: AnyArchitecture) -> Architecture:
    """``arch`` if it is made of layers: the ONNX exporter knows no NAS-Bench-201 cell."""
    if not isinstance(arch, Architecture):
        raise EvaluationError("latency: NAS-Bench-201 cells have no ONNX export; use a layer space")
    return arch


def profile_from_record(record: Any) -> Profile:
    return Profile(
        p10_ms=record.p10_ms,
        median_ms=record.median_ms,
        p90_ms=record.p90_ms,
        runs=record.runs,
        processes=record.processes,
        seconds=record.seconds,
        reference_ratio=record.reference_ratio,
        kernel_paths=list(record.kernel_paths or []),
    )


def store_profile(
    cache: Any,
    arch_id: str,
    fingerprint: str,
    hardware: Hardware,
    profile: Profile,
    *,
    replace: bool = False,
) -> Any:
    return cache.put_latency_profile(
        arch_id,
        fingerprint,
        hardware=hardware.as_dict(),
        p10_ms=profile.p10_ms,
        median_ms=profile.median_ms,
        p90_ms=profile.p90_ms,
        runs=profile.runs,
        processes=profile.processes,
        seconds=profile.seconds,
        reference_ratio=profile.reference_ratio,
        kernel_paths=profile.kernel_paths,
        replace=replace,
    )


def onnx_model_id(model: bytes) -> str:
    """The id of an ONNX file in ``latency_profiles``: a hash of its bytes."""
    return "onnx:" + hashlib.sha256(model).hexdigest()[:16]
