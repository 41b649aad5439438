"""The tables nas keeps next to Optuna's, in the same database.

They hang off their own :class:`Base` (and so their own ``MetaData``): creating
them never touches Optuna's tables, and Optuna's ``create_all`` never touches
ours. Names do not collide with Optuna's (``studies``, ``trials``, ...).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# Lengths are part of the contract: the store rejects longer values up front so
# SQLite (which ignores VARCHAR lengths) and PostgreSQL behave alike.
ARCH_ID_LENGTH = 32
FINGERPRINT_LENGTH = 64
NAME_LENGTH = 255
SHORT_NAME_LENGTH = 64  # ORT version, execution provider, precision
KEY_HASH_LENGTH = 64  # SHA-256 hex of a kernel's canonical JSON key


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware.

    SQLite has no time zones: it gets the naive UTC value and the zone is put
    back on read, so both backends hand out equal, aware datetimes.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"timestamps must be timezone-aware, but got {value!r}")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)  # type: ignore[no-any-return]
        return value.astimezone(timezone.utc)  # type: ignore[no-any-return]


class Base(DeclarativeBase):
    """Declarative base of nas's own tables (not Optuna's)."""


class ArchitectureRow(Base):
    """One network, keyed by its stable hash, with its analytic cost."""

    __tablename__ = "architectures"

    arch_id: Mapped[str] = mapped_column(String(ARCH_ID_LENGTH), primary_key=True)
    space: Mapped[str] = mapped_column(String(NAME_LENGTH))
    canonical_json: Mapped[str] = mapped_column(Text)
    params: Mapped[int] = mapped_column(BigInteger)
    macs: Mapped[int] = mapped_column(BigInteger)
    bitops: Mapped[int] = mapped_column(BigInteger)
    bytes: Mapped[int] = mapped_column(BigInteger)
    peak_activation_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class EvaluationRow(Base):
    """One run of one evaluator on one architecture; ``error`` NULL means success."""

    __tablename__ = "evaluations"
    __table_args__ = (
        Index("ix_nas_evaluations_key", "arch_id", "evaluator", "fingerprint"),
        # At most one success per key; failures may repeat.
        Index(
            "uq_nas_evaluations_success",
            "arch_id",
            "evaluator",
            "fingerprint",
            unique=True,
            sqlite_where=text("error IS NULL"),
            postgresql_where=text("error IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    arch_id: Mapped[str] = mapped_column(
        String(ARCH_ID_LENGTH), ForeignKey("architectures.arch_id")
    )
    evaluator: Mapped[str] = mapped_column(String(NAME_LENGTH))
    fingerprint: Mapped[str] = mapped_column(String(FINGERPRINT_LENGTH))
    metrics: Mapped[str] = mapped_column(Text)  # JSON, see _records.encode_metrics
    seconds: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class EvaluationFileRow(Base):
    """A file an evaluation made (the trained weights), stored with the evaluation's key.

    One row per ``(arch_id, evaluator, fingerprint, name)``: the files of the one
    successful evaluation of that key, so whoever reuses the evaluation gets them.
    """

    __tablename__ = "evaluation_files"
    __table_args__ = (
        Index(
            "uq_nas_evaluation_files_key",
            "arch_id",
            "evaluator",
            "fingerprint",
            "name",
            unique=True,
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    arch_id: Mapped[str] = mapped_column(
        String(ARCH_ID_LENGTH), ForeignKey("architectures.arch_id")
    )
    evaluator: Mapped[str] = mapped_column(String(NAME_LENGTH))
    fingerprint: Mapped[str] = mapped_column(String(FINGERPRINT_LENGTH))
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    sha256: Mapped[str] = mapped_column(String(KEY_HASH_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class LatencyProfileRow(Base):
    """One measured latency of one model on one hardware fingerprint.

    ``arch_id`` is deliberately not a foreign key: a profiled ONNX file has a
    content-hash id that need not be in ``architectures``. The fingerprint's
    fields are columns of their own so SQL can filter on them.
    """

    __tablename__ = "latency_profiles"
    __table_args__ = (Index("uq_nas_latency_profiles_key", "arch_id", "fingerprint", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    arch_id: Mapped[str] = mapped_column(String(ARCH_ID_LENGTH))
    fingerprint: Mapped[str] = mapped_column(String(FINGERPRINT_LENGTH))
    cpu: Mapped[str] = mapped_column(String(NAME_LENGTH))
    cores: Mapped[int] = mapped_column(Integer)
    ort_version: Mapped[str] = mapped_column(String(SHORT_NAME_LENGTH))
    provider: Mapped[str] = mapped_column(String(SHORT_NAME_LENGTH))
    threads: Mapped[int] = mapped_column(Integer)
    batch_size: Mapped[int] = mapped_column(Integer)
    precision: Mapped[str] = mapped_column(String(SHORT_NAME_LENGTH))
    p10_ms: Mapped[float] = mapped_column(Float)
    median_ms: Mapped[float] = mapped_column(Float)
    p90_ms: Mapped[float] = mapped_column(Float)
    runs: Mapped[int] = mapped_column(Integer)  # timed runs per process
    processes: Mapped[int] = mapped_column(Integer)
    reference_ratio: Mapped[float | None] = mapped_column(Float, nullable=True)
    kernel_paths: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON list
    seconds: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class LatencyKernelRow(Base):
    """One kernel (a single layer configuration) measured once on a fingerprint."""

    __tablename__ = "latency_kernels"
    __table_args__ = (Index("uq_nas_latency_kernels_key", "fingerprint", "key_hash", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    fingerprint: Mapped[str] = mapped_column(String(FINGERPRINT_LENGTH))
    key_hash: Mapped[str] = mapped_column(String(KEY_HASH_LENGTH))
    key: Mapped[str] = mapped_column(Text)  # canonical JSON, see _records.canonical_json
    path: Mapped[str] = mapped_column(String(NAME_LENGTH))  # e.g. "int8:QLinearConv"
    ms: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class LatencyPredictorRow(Base):
    """The fitted latency predictor of one fingerprint, as plain JSON (no pickles)."""

    __tablename__ = "latency_predictors"

    fingerprint: Mapped[str] = mapped_column(String(FINGERPRINT_LENGTH), primary_key=True)
    hardware: Mapped[str] = mapped_column(Text)  # JSON of the fingerprint's fields
    model: Mapped[str] = mapped_column(Text)  # JSON of the fitted coefficients
    n_kernels: Mapped[int] = mapped_column(Integer)
    n_models: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
