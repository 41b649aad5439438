"""Immutable records handed out by the store, and the JSON form of metrics."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from numbers import Real

from ._models import ArchitectureRow, EvaluationRow

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
