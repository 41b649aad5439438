"""Immutable records handed out by the store, and the JSON form of what they hold."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from numbers import Integral, Real
from typing import Any, TypedDict

from ._models import (
    NAME_LENGTH,
    SHORT_NAME_LENGTH,
    ArchitectureRow,
    EvaluationRow,
    LatencyKernelRow,
    LatencyPredictorRow,
    LatencyProfileRow,
)

# Strict JSON has no Infinity/NaN, so non-finite values are stored as these
# strings; every metric is a float, so a string can only mean one of them.
_NON_FINITE = {math.inf: "inf", -math.inf: "-inf"}


@dataclass(frozen=True)
class ArchitectureRecord:
    """A stored architecture and its analytic cost."""

    arch_id: str
    space: str
    canonical_json: str
    params: int
    macs: int
    bitops: int
    bytes: int
    peak_activation_bytes: int
    created_at: datetime


@dataclass(frozen=True)
class EvaluationRecord:
    """A stored evaluation; ``error`` is ``None`` for a success."""

    arch_id: str
    evaluator: str
    fingerprint: str
    metrics: dict[str, float] = field(hash=False)
    seconds: float
    created_at: datetime
    error: str | None


@dataclass(frozen=True)
class LatencyProfileRecord:
    """One measured latency of one model on one hardware fingerprint.

    ``runs`` is the number of timed runs per process; ``reference_ratio`` the
    latency over that of a fixed reference model interleaved with it;
    ``kernel_paths`` the per-layer ORT kernel paths as decoded JSON.
    """

    arch_id: str
    fingerprint: str
    cpu: str
    cores: int
    ort_version: str
    provider: str
    threads: int
    batch_size: int
    precision: str
    p10_ms: float
    median_ms: float
    p90_ms: float
    runs: int
    processes: int
    reference_ratio: float | None
    kernel_paths: list[dict[str, Any]] | None = field(hash=False)
    seconds: float
    created_at: datetime

    @property
    def hardware(self) -> dict[str, str | int]:
        """The fingerprint's fields (:data:`HARDWARE_FIELDS`) as a dict."""
        return {name: getattr(self, name) for name in HARDWARE_FIELDS}


@dataclass(frozen=True)
class LatencyKernelRecord:
    """One kernel (a layer configuration) measured once on a fingerprint."""

    fingerprint: str
    key_hash: str
    key: dict[str, Any] = field(hash=False)
    path: str
    ms: float
    created_at: datetime


@dataclass(frozen=True)
class LatencyPredictorRecord:
    """The fitted latency predictor of one fingerprint."""

    fingerprint: str
    hardware: dict[str, str | int] = field(hash=False)
    model: dict[str, Any] = field(hash=False)
    n_kernels: int
    n_models: int
    created_at: datetime


class Hardware(TypedDict):
    """The fields a latency fingerprint hashes, checked by :func:`clean_hardware`."""

    cpu: str
    cores: int
    ort_version: str
    provider: str
    threads: int
    batch_size: int
    precision: str


HARDWARE_FIELDS = tuple(Hardware.__annotations__)


def clean_hardware(hardware: Mapping[str, object]) -> Hardware:
    """Check that ``hardware`` holds exactly :data:`HARDWARE_FIELDS`, each of its type."""
    missing = [name for name in HARDWARE_FIELDS if name not in hardware]
    unknown = [name for name in hardware if name not in HARDWARE_FIELDS]
    for problem, names in (("is missing", missing), ("has unknown key", unknown)):
        if names:
            raise ValueError(
                f"hardware {problem} {', '.join(map(repr, names))}; "
                f"it must hold exactly {', '.join(HARDWARE_FIELDS)}"
            )

    def text(name: str, limit: int) -> str:
        return check_text(f"hardware[{name!r}]", hardware[name], limit)

    def integer(name: str) -> int:
        return check_int(f"hardware[{name!r}]", hardware[name])

    return Hardware(
        cpu=text("cpu", NAME_LENGTH),
        cores=integer("cores"),
        ort_version=text("ort_version", SHORT_NAME_LENGTH),
        provider=text("provider", SHORT_NAME_LENGTH),
        threads=integer("threads"),
        batch_size=integer("batch_size"),
        precision=text("precision", SHORT_NAME_LENGTH),
    )


def check_text(field: str, value: object, limit: int) -> str:
    """``value`` if it is a str of at most ``limit`` characters."""
    if not isinstance(value, str):
        raise ValueError(f"{field} must be a str, but got {value!r}")
    if len(value) > limit:
        raise ValueError(f"{field} must be at most {limit} characters, but got {len(value)}")
    return value


def check_int(field: str, value: object, minimum: int | None = None) -> int:
    """``value`` as an int (bools refused), at least ``minimum`` if given."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(f"{field} must be an integer, but got {value!r}")
    number = int(value)
    if minimum is not None and number < minimum:
        raise ValueError(f"{field} must be >= {minimum}, but got {number}")
    return number


def check_finite(field: str, value: object, minimum: float | None = None) -> float:
    """``value`` as a finite float (bools refused), at least ``minimum`` if given."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ValueError(f"{field} must be a finite number, but got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{field} must be >= {minimum}, but got {value!r}")
    return float(value)


def check_json(field: str, value: object) -> None:
    """Raise ValueError unless ``value`` is strict JSON: str keys, finite numbers."""
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{field} must be a finite number, but got {value!r}")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{field} keys must be str, but got {key!r}")
            check_json(f"{field}[{key!r}]", item)
    elif isinstance(value, (list, tuple)):
        for number, item in enumerate(value):
            check_json(f"{field}[{number}]", item)
    else:
        raise ValueError(
            f"{field} must be JSON (dict, list, str, int, float, bool or None), "
            f"but got {type(value).__name__} {value!r}"
        )


def encode_json(field: str, value: object, *, sort_keys: bool = False) -> str:
    """Compact strict JSON for ``value``; ValueError naming ``field`` if it is not JSON."""
    check_json(field, value)
    return json.dumps(value, sort_keys=sort_keys, separators=(",", ":"), allow_nan=False)


def encode_object(field: str, value: object, *, sort_keys: bool = False) -> str:
    """:func:`encode_json` for a value that must be a JSON object (a mapping)."""
    if not isinstance(value, Mapping):
        raise ValueError(f"{field} must be a dict, but got {value!r}")
    return encode_json(field, dict(value), sort_keys=sort_keys)


def encode_kernel_paths(kernel_paths: list[dict[str, Any]] | None) -> str | None:
    """The JSON text of a profile's per-layer kernel paths (a list of objects), or None."""
    if kernel_paths is None:
        return None
    if not isinstance(kernel_paths, (list, tuple)):
        raise ValueError(f"kernel_paths must be a list of dicts, but got {kernel_paths!r}")
    for number, item in enumerate(kernel_paths):
        if not isinstance(item, Mapping):
            raise ValueError(f"kernel_paths[{number}] must be a dict, but got {item!r}")
    return encode_json("kernel_paths", kernel_paths)


def canonical_json(key: Mapping[str, Any], field: str = "key") -> str:
    """The canonical JSON of a kernel key: sorted keys at every level, no whitespace."""
    return encode_object(field, key, sort_keys=True)


def kernel_key_hash(key: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a kernel key's canonical JSON; the order of dict keys does not matter.

    >>> kernel_key_hash({"op": "conv", "k": 3}) == kernel_key_hash({"k": 3, "op": "conv"})
    True
    >>> len(kernel_key_hash({"op": "conv"}))
    64
    """
    return key_hash_of(canonical_json(key))


def key_hash_of(canonical: str) -> str:
    """SHA-256 (hex) of an already canonical JSON text."""
    return hashlib.sha256(canonical.encode()).hexdigest()


def clean_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """Check that ``metrics`` maps names to real numbers; return them as floats."""
    cleaned: dict[str, float] = {}
    for name, value in metrics.items():
        if not isinstance(name, str):
            raise ValueError(f"metric names must be str, but got {name!r}")
        if isinstance(value, bool) or not isinstance(value, Real):
            raise ValueError(f"metrics[{name!r}] must be a real number, but got {value!r}")
        cleaned[name] = float(value)
    return cleaned


def encode_metrics(metrics: Mapping[str, float]) -> str:
    """Strict JSON for ``metrics``, with inf/-inf/nan as strings.

    >>> encode_metrics({"acc": 0.5, "loss": float("inf")})
    '{"acc": 0.5, "loss": "inf"}'
    """
    encoded = {name: json_float(value) for name, value in clean_metrics(metrics).items()}
    return json.dumps(encoded, sort_keys=True, allow_nan=False)


def decode_metrics(text: str) -> dict[str, float]:
    """The inverse of :func:`encode_metrics`."""
    return {name: float(value) for name, value in json.loads(text).items()}


def json_float(value: float) -> float | str:
    """``value`` for strict JSON: finite floats as they are, inf/-inf/nan as strings.

    ``float()`` reads every result back. Strict JSON is what Optuna's dashboard
    and other tools parse, so trial user attrs use it too.

    >>> [json_float(v) for v in (0.5, float("-inf"), float("nan"))]
    [0.5, '-inf', 'nan']
    """
    if math.isnan(value):
        return "nan"
    return _NON_FINITE.get(value, value)


def architecture_record(row: ArchitectureRow) -> ArchitectureRecord:
    return ArchitectureRecord(
        arch_id=row.arch_id,
        space=row.space,
        canonical_json=row.canonical_json,
        params=row.params,
        macs=row.macs,
        bitops=row.bitops,
        bytes=row.bytes,
        peak_activation_bytes=row.peak_activation_bytes,
        created_at=row.created_at,
    )


def evaluation_record(row: EvaluationRow) -> EvaluationRecord:
    return EvaluationRecord(
        arch_id=row.arch_id,
        evaluator=row.evaluator,
        fingerprint=row.fingerprint,
        metrics=decode_metrics(row.metrics),
        seconds=row.seconds,
        created_at=row.created_at,
        error=row.error,
    )


def latency_profile_record(row: LatencyProfileRow) -> LatencyProfileRecord:
    return LatencyProfileRecord(
        arch_id=row.arch_id,
        fingerprint=row.fingerprint,
        cpu=row.cpu,
        cores=row.cores,
        ort_version=row.ort_version,
        provider=row.provider,
        threads=row.threads,
        batch_size=row.batch_size,
        precision=row.precision,
        p10_ms=row.p10_ms,
        median_ms=row.median_ms,
        p90_ms=row.p90_ms,
        runs=row.runs,
        processes=row.processes,
        reference_ratio=row.reference_ratio,
        kernel_paths=None if row.kernel_paths is None else json.loads(row.kernel_paths),
        seconds=row.seconds,
        created_at=row.created_at,
    )


def latency_kernel_record(row: LatencyKernelRow) -> LatencyKernelRecord:
    return LatencyKernelRecord(
        fingerprint=row.fingerprint,
        key_hash=row.key_hash,
        key=json.loads(row.key),
        path=row.path,
        ms=row.ms,
        created_at=row.created_at,
    )


def latency_predictor_record(row: LatencyPredictorRow) -> LatencyPredictorRecord:
    return LatencyPredictorRecord(
        fingerprint=row.fingerprint,
        hardware=json.loads(row.hardware),
        model=json.loads(row.model),
        n_kernels=row.n_kernels,
        n_models=row.n_models,
        created_at=row.created_at,
    )
