"""A per-kernel latency predictor, learned on this machine's fingerprint.

Like nn-Meter's and Once-for-All's lookup tables, but keyed by what ONNX Runtime
fuses and by its precision path: a *kernel* is one searched layer as the
exporter writes it — its input quantizer, its convolutions with BatchNorm and
ReLU folded in, and the quantizer that reads its output when one follows
directly (that decides whether ORT fuses it into an integer kernel). Each
distinct kernel is exported alone and timed once (:func:`measure_kernels`);
the table lives in the database (``latency_kernels``).

A whole architecture is predicted as ``a * sum(kernel ms) + b * kernels + c``,
the correction fitted by least squares on a few whole models measured with
the full protocol (``latency_predictors``, plain JSON). Kernels not in the table
are measured on first use (and stored); with ``measure_missing=False`` a
per-family linear fit on MACs and tensor sizes stands in for them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from nas.evaluators._latency import LatencySettings, run_protocol
from nas.search_space._layers import layer_type
from nas.storage import kernel_key_hash  # the store's own key rule

if TYPE_CHECKING:
    from nas.search_space._architecture import Architecture, LayerSpec

#: The protocol for one kernel: one process, shorter warm-up and fewer runs.
KERNEL_RUNS = 100
KERNEL_WARMUP_SECONDS = 0.05
FEATURES = ("macs", "in_elems", "out_elems", "params")


@dataclass(frozen=True)
class Kernel:
    """One kernel of an architecture: its key, its hash, and size features."""

    key: dict[str, Any]
    hash: str
    features: tuple[float, ...]


def _out(d: int, k: int, s: int) -> int:
    pad = k // 2
    return (d + 2 * pad - k) // s + 1


def kernels(arch: Architecture, settings: LatencySettings) -> list[Kernel]:
    """The kernels of ``arch`` in order (identity layers have none)."""
    specs = ((arch.stem,) if arch.stem else ()) + arch.layers
    quant = settings.precision == "qdq"
    shape = tuple(arch.input_shape)
    signed = True
    out: list[Kernel] = []
    for i, spec in enumerate(specs):
        lt = layer_type(spec.type)
        if lt.family == "identity":
            continue
        reader = _reader(specs, i, arch.head_abits)
        key: dict[str, Any] = {
            "family": lt.family,
            "kernel": lt.kernel,
            "stride": spec.stride,
            "expansion": spec.expansion,
            "in": list(shape),
            "width": spec.width if lt.has_weights else shape[0],
            "wbits": spec.wbits if quant and lt.has_weights else 32,
            "abits": spec.abits if quant and lt.has_weights else 32,
            "signed": signed if lt.has_weights else False,
            "next_abits": reader if quant else 32,
        }
        key.update(_common(settings))
        c_out = key["width"]
        new_shape = (c_out, *(_out(d, lt.kernel, spec.stride) for d in shape[1:]))
        out.append(Kernel(key, kernel_key_hash(key), _features(spec, lt.family, shape, new_shape)))
        if lt.has_weights:
            signed = lt.family == "mbconv"
        shape = new_shape
    head = {
        "family": "head",
        "in": list(shape),
        "width": arch.num_classes,
        "wbits": arch.head_wbits if quant else 32,
        "abits": arch.head_abits if quant else 32,
        "signed": signed,
        **_common(settings),
    }
    macs = shape[0] * arch.num_classes
    feats = (float(macs), float(math.prod(shape)), float(arch.num_classes), float(macs))
    out.append(Kernel(head, kernel_key_hash(head), feats))
    return out


def _common(settings: LatencySettings) -> dict[str, Any]:
    return {"batch": settings.batch_size, "low_bits": settings.low_bits}


def _reader(specs: Sequence[LayerSpec], i: int, head_abits: int) -> int:
    """Bits of the quantizer that directly reads layer ``i``'s output (32: none)."""
    for spec in specs[i + 1 :]:
        lt = layer_type(spec.type)
        if lt.family == "identity":
            continue
        return spec.abits if lt.has_weights else 32
    return head_abits


def _features(
    spec: LayerSpec, family: str, shape: tuple[int, ...], new_shape: tuple[int, ...]
) -> tuple[float, ...]:
    c_in, c_out = shape[0], new_shape[0]
    n_out = math.prod(new_shape[1:])
    k = layer_type(spec.type).kernel
    k_elems = k ** (len(shape) - 1) if k else 1
    if family == "conv":
        params = c_in * c_out * k_elems
        macs = params * n_out
    elif family == "dwsep":
        params = c_in * k_elems + c_in * c_out
        macs = params * n_out
    elif family == "mbconv":
        hidden = c_in * spec.expansion
        params = (c_in * hidden if spec.expansion != 1 else 0) + hidden * k_elems + hidden * c_out
        macs = c_in * hidden * math.prod(shape[1:]) + (hidden * k_elems + hidden * c_out) * n_out
    elif family == "mlp":
        params = macs = c_in * c_out
    else:  # pooling
        params, macs = 0, c_out * n_out * k_elems
    return (float(macs), float(math.prod(shape)), float(math.prod(new_shape)), float(params))


def kernel_model(kernel: Kernel, settings: LatencySettings) -> bytes:
    """The kernel alone as an ONNX model, with the same quantizers around it."""
    import torch
    from torch import nn

    from nas.evaluators._export import export_onnx
    from nas.search_space._builder import build_layer
    from nas.search_space._quant import ActQuant, QLinear

    key = kernel.key
    shape = tuple(key["in"])
    torch.manual_seed(0)
    modules: list[nn.Module]
    if key["family"] == "head":
        rank = len(shape)
        pool = (
            [nn.AdaptiveAvgPool2d(1) if rank == 3 else nn.AdaptiveAvgPool1d(1)] if rank > 1 else []
        )
        flat = [nn.Flatten()] if rank > 1 else []
        linear = QLinear(
            shape[0],
            key["width"],
            bias=True,
            wbits=key["wbits"],
            abits=key["abits"],
            signed_input=key["signed"],
        )
        modules = [*pool, *flat, linear]
    else:
        from nas.search_space._architecture import LayerSpec

        name = _type_name(key)
        spec = LayerSpec(
            type=name,
            width=key["width"],
            stride=key["stride"],
            expansion=key["expansion"],
            wbits=key["wbits"],
            abits=key["abits"],
        )
        layer, signed_out = build_layer(spec, shape[0], key["signed"], len(shape))
        modules = [layer]
        if key["next_abits"] < 32:
            modules.append(ActQuant(key["next_abits"], signed_out))
    model = nn.Sequential(*modules).eval()
    exported = export_onnx(
        model,
        shape,
        batch_size=settings.batch_size,
        precision=settings.precision,
        low_bits=settings.low_bits,
    )
    return exported.serialize()


def _type_name(key: Mapping[str, Any]) -> str:
    family, k = key["family"], key["kernel"]
    if family in ("conv", "dwsep", "mbconv"):
        return f"{family}{k}x{k}"
    if family in ("maxpool", "avgpool"):
        return f"{family}{k}x{k}"
    return str(family)


def measure_kernels(kernels_: Sequence[Kernel], settings: LatencySettings) -> list[float]:
    """Time each kernel once (one process, the kernel protocol); p10 in ms."""
    if not kernels_:
        return []
    protocol = settings.model_copy(
        update={"runs": KERNEL_RUNS, "warmup_seconds": KERNEL_WARMUP_SECONDS, "reference": False}
    )
    models = [kernel_model(k, settings) for k in kernels_]
    results = run_protocol(models, protocol, processes=1)
    out = []
    for k, per_process in zip(kernels_, results, strict=True):
        r = per_process[0]
        if "error" in r:
            from nas._errors import EvaluationError

            raise EvaluationError(f"kernel {k.key['family']}: onnxruntime: {r['error']}")
        out.append(float(r["p10_ms"]))
    return out


class LatencyPredictor:
    """Kernel table + correction for one fingerprint; :meth:`predict` takes well under 1 ms."""

    def __init__(
        self,
        settings: LatencySettings,
        table: dict[str, float],
        correction: Sequence[float] = (1.0, 0.0, 0.0),
        fallback: dict[str, list[float]] | None = None,
        store: Any = None,
        measure_missing: bool = True,
    ) -> None:
        self.settings = settings
        self.table = dict(table)
        self.correction = tuple(float(c) for c in correction)
        self.fallback = fallback or {}
        self.store = store
        self.measure_missing = measure_missing
        self.fingerprint = settings.fingerprint()

    # -- persistence -------------------------------------------------------------
    @classmethod
    def load(cls, store: Any, settings: LatencySettings) -> LatencyPredictor | None:
        """The calibrated predictor for this machine from ``store``, or None."""
        fingerprint = settings.fingerprint()
        record = store.get_latency_predictor(fingerprint)
        if record is None:
            return None
        table = {h: r.ms for h, r in store.get_latency_kernels(fingerprint).items()}
        model = record.model
        return cls(
            settings,
            table,
            model["correction"],
            model.get("fallback", {}),
            store=store,
        )

    def save(self, store: Any, n_models: int) -> None:
        store.put_latency_predictor(
            self.fingerprint,
            hardware=self.settings.hardware().as_dict(),
            model={"correction": list(self.correction), "fallback": self.fallback},
            n_kernels=len(self.table),
            n_models=n_models,
        )

    # -- prediction --------------------------------------------------------------
    def fill(self, archs: Iterable[Architecture]) -> int:
        """Measure (and store) every kernel of ``archs`` not in the table; how many."""
        missing: dict[str, Kernel] = {}
        for arch in archs:
            for k in kernels(arch, self.settings):
                if k.hash not in self.table:
                    missing.setdefault(k.hash, k)
        todo = list(missing.values())
        for k, ms in zip(todo, measure_kernels(todo, self.settings), strict=True):
            self.table[k.hash] = ms
        if self.store is not None and todo:
            self.store.put_latency_kernels(
                self.fingerprint,
                [(k.key, "measured", self.table[k.hash]) for k in todo],
            )
        return len(todo)

    def kernel_sum(self, arch: Architecture) -> tuple[float, int]:
        """Sum of the kernels' latencies and their count (measuring missing ones if allowed)."""
        ks = kernels(arch, self.settings)
        if self.measure_missing and any(k.hash not in self.table for k in ks):
            self.fill([arch])
        total = 0.0
        for k in ks:
            ms = self.table.get(k.hash)
            total += ms if ms is not None else self._fallback(k)
        return total, len(ks)

    def predict(self, arch: Architecture) -> float:
        """Predicted p10 latency of ``arch`` in ms."""
        total, n = self.kernel_sum(arch)
        a, b, c = self.correction
        return max(a * total + b * n + c, 1e-6)

    def _fallback(self, k: Kernel) -> float:
        coef = self.fallback.get(str(k.key["family"]))
        if coef is None:
            raise KeyError(f"no measured kernel and no fit for family {k.key['family']!r}")
        return max(float(np.dot(coef, (*k.features, 1.0))), 0.0)

    # -- fitting -----------------------------------------------------------------
    def fit(self, archs: Sequence[Architecture], measured: Sequence[float]) -> dict[str, float]:
        """Fit the correction on whole models ``archs`` with latencies ``measured`` (ms)."""
        rows = [self.kernel_sum(a) for a in archs]
        x = np.array([[s, n, 1.0] for s, n in rows])
        y = np.asarray(measured, dtype=float)
        coef, *_ = np.linalg.lstsq(x / y[:, None], np.ones_like(y), rcond=None)  # relative error
        self.correction = tuple(float(c) for c in coef)
        self.fallback = self._fit_fallback(archs)
        pred = np.array([self.predict(a) for a in archs])
        err = np.abs(pred / y - 1)
        return {"mean_abs_rel_error": float(err.mean()), "max_abs_rel_error": float(err.max())}

    def _fit_fallback(self, archs: Sequence[Architecture]) -> dict[str, list[float]]:
        by_family: dict[str, list[tuple[tuple[float, ...], float]]] = {}
        seen: set[str] = set()
        for arch in archs:
            for k in kernels(arch, self.settings):
                if k.hash in self.table and k.hash not in seen:
                    seen.add(k.hash)
                    by_family.setdefault(str(k.key["family"]), []).append(
                        (k.features, self.table[k.hash])
                    )
        out = {}
        for family, rows in by_family.items():
            x = np.array([(*f, 1.0) for f, _ in rows])
            y = np.array([ms for _, ms in rows])
            coef, *_ = np.linalg.lstsq(x, y, rcond=None)
            out[family] = [float(c) for c in coef]
        return out
