"""The store: architectures, evaluations and latencies next to Optuna's tables."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from operator import index
from types import TracebackType
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, delete, func, inspect, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from nas._errors import StorageError

from ._models import (
    ARCH_ID_LENGTH,
    FINGERPRINT_LENGTH,
    NAME_LENGTH,
    ArchitectureRow,
    Base,
    EvaluationFileRow,
    EvaluationRow,
    LatencyKernelRow,
    LatencyPredictorRow,
    LatencyProfileRow,
    utcnow,
)
from ._records import (
    ArchitectureRecord,
    EvaluationRecord,
    LatencyKernelRecord,
    LatencyPredictorRecord,
    LatencyProfileRecord,
    architecture_record,
    canonical_json,
    check_finite,
    check_int,
    check_text,
    clean_hardware,
    clean_metrics,
    encode_json,
    encode_kernel_paths,
    encode_metrics,
    encode_object,
    evaluation_record,
    key_hash_of,
    latency_kernel_record,
    latency_predictor_record,
    latency_profile_record,
)
from ._url import (
    engine_kwargs,
    make_engine,
    mask_url,
    open_errors,
    short_reason,
    sqlite_file_exists,
    tune_sqlite,
)

if TYPE_CHECKING:
    import optuna

# Dialects whose INSERT has ON CONFLICT DO NOTHING: a lost race is not an error.
_UPSERT_INSERT: dict[str, Callable[..., Any]] = {
    "sqlite": sqlite.insert,
    "postgresql": postgresql.insert,
}

# Rows per multi-row INSERT: with 6 columns this stays under the 999 bound
# parameters that SQLite builds before 3.32 allow.
_BATCH_ROWS = 150


class Store:
    """Architectures, their evaluations and latencies, in the database that holds the study.

    One URL holds Optuna's tables and ours. The store is thread-safe (each call
    takes its own connection from the engine's pool) and safe to share between
    processes and machines through one database: writes that race never raise.

    Example:
        >>> store = Store("sqlite:///:memory:")
        >>> store.put_architecture("a1", "tiny", "{}", params=10, macs=20, bitops=40,
        ...                        bytes=10, peak_activation_bytes=8)
        True
        >>> store.put_evaluation("a1", "proxy", "f" * 64, {"loss": float("inf")}, 0.1).metrics
        {'loss': inf}
        >>> store.get_evaluation("a1", "proxy", "f" * 64).metrics["loss"]
        inf
        >>> store.close()

    Raises:
        StorageError: the URL cannot be parsed, its driver is missing, or the
            database cannot be reached (a one-line message, password masked).
    """

    def __init__(self, url: str, *, create: bool = True, heartbeat_grace: int = 60) -> None:
        self._url = url
        self._grace = heartbeat_grace
        self._optuna: optuna.storages.RDBStorage | None = None
        with open_errors(url):
            parsed = make_url(url)
            if parsed.get_backend_name() == "sqlite":
                sqlite_file_exists(parsed)  # a clear reason for a missing directory
            self._engine: Engine = make_engine(parsed)
            self._open(create)
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)

    def _open(self, create: bool) -> None:
        try:
            if create:
                Base.metadata.create_all(self._engine)
            else:
                with self._engine.connect() as connection:
                    inspect(connection).get_table_names()
        except BaseException:
            self._engine.dispose()
            raise

    @property
    def url(self) -> str:
        """The URL as given (password included: do not print it)."""
        return self._url

    @property
    def masked_url(self) -> str:
        """The URL with its password replaced by ``***``."""
        return mask_url(self._url)

    @contextmanager
    def _session(self) -> Iterator[Session]:
        """One transaction; database failures become :class:`StorageError`."""
        try:
            with self._sessions.begin() as session:
                yield session
        except IntegrityError:
            raise
        except SQLAlchemyError as exc:
            reason = short_reason(exc, self._url)
            raise StorageError(f"storage: {self.masked_url}: {reason}") from exc

    def put_architecture(
        self,
        arch_id: str,
        space: str,
        canonical_json: str,
        *,
        params: int,
        macs: int,
        bitops: int,
        bytes: int,
        peak_activation_bytes: int,
    ) -> bool:
        """Insert an architecture unless its ``arch_id`` is stored; True if inserted."""
        _check_length("arch_id", arch_id, ARCH_ID_LENGTH)
        _check_length("space", space, NAME_LENGTH)
        values = dict(
            arch_id=arch_id,
            space=space,
            canonical_json=canonical_json,
            params=index(params),
            macs=index(macs),
            bitops=index(bitops),
            bytes=index(bytes),
            peak_activation_bytes=index(peak_activation_bytes),
            created_at=utcnow(),
        )
        with self._session() as session:
            return self._insert_ignoring_conflict(session, ArchitectureRow, values)

    def _insert_ignoring_conflict(
        self, session: Session, model: type[Base], values: dict[str, Any], **target: Any
    ) -> bool:
        """INSERT ... ON CONFLICT DO NOTHING; whether a row was inserted."""
        insert = _UPSERT_INSERT.get(self._engine.dialect.name)
        if insert is None:  # other dialects: a nested transaction absorbs the conflict
            try:
                with session.begin_nested():
                    session.add(model(**values))
                return True
            except IntegrityError:
                return False
        statement = insert(model).values(**values).on_conflict_do_nothing(**target)
        # SQLAlchemy reads an INSERT's rowcount only when asked to keep it.
        result = session.execute(statement, execution_options={"preserve_rowcount": True})
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def get_architecture(self, arch_id: str) -> ArchitectureRecord | None:
        """The stored architecture ``arch_id``, or None."""
        with self._session() as session:
            row = session.get(ArchitectureRow, arch_id)
            return None if row is None else architecture_record(row)

    def count_architectures(self) -> int:
        """How many architectures are stored."""
        with self._session() as session:
            return session.scalar(select(func.count()).select_from(ArchitectureRow)) or 0

    def get_evaluation(
        self, arch_id: str, evaluator: str, fingerprint: str
    ) -> EvaluationRecord | None:
        """The successful evaluation for this key, or None (failures are not returned)."""
        with self._session() as session:
            row = _success(session, arch_id, evaluator, fingerprint)
            return None if row is None else evaluation_record(row)

    def put_evaluation(
        self,
        arch_id: str,
        evaluator: str,
        fingerprint: str,
        metrics: Mapping[str, float],
        seconds: float,
        error: str | None = None,
        files: Mapping[str, bytes] | None = None,
    ) -> EvaluationRecord:
        """Store one evaluation in one transaction; ``error`` None means success.

        ``files`` (a success's: the trained weights, by name) are stored with it,
        in the same transaction, for :meth:`get_evaluation_files`. If a success is
        already stored for the key (another driver won the race), nothing is
        written and the stored one (with its files) is returned.

        Raises:
            StorageError: ``arch_id`` is not stored (call :meth:`put_architecture` first).
            ValueError: a metric is not a real number, or a key is too long.
        """
        _check_length("arch_id", arch_id, ARCH_ID_LENGTH)
        _check_length("evaluator", evaluator, NAME_LENGTH)
        _check_length("fingerprint", fingerprint, FINGERPRINT_LENGTH)
        for name in files or {}:
            _check_length("file name", name, NAME_LENGTH)
        record = EvaluationRecord(
            arch_id, evaluator, fingerprint, clean_metrics(metrics), float(seconds), utcnow(), error
        )
        try:
            return self._write_evaluation(record, files or {})
        except IntegrityError as exc:
            raise StorageError(
                f"storage: cannot store the evaluation of arch_id {arch_id!r}: "
                "the architecture is not stored (call put_architecture first)"
            ) from exc

    def _write_evaluation(
        self, record: EvaluationRecord, files: Mapping[str, bytes]
    ) -> EvaluationRecord:
        values = dict(vars(record), metrics=encode_metrics(record.metrics))
        with self._session() as session:
            if record.error is not None:
                session.add(EvaluationRow(**values))
                return record
            target = dict(
                index_elements=["arch_id", "evaluator", "fingerprint"],
                index_where=EvaluationRow.error.is_(None),
            )
            if self._insert_ignoring_conflict(session, EvaluationRow, values, **target):
                session.add_all(
                    EvaluationFileRow(
                        arch_id=record.arch_id,
                        evaluator=record.evaluator,
                        fingerprint=record.fingerprint,
                        name=name,
                        data=bytes(data),
                        sha256=hashlib.sha256(data).hexdigest(),
                        created_at=record.created_at,
                    )
                    for name, data in files.items()
                )
                return record
            row = _success(session, record.arch_id, record.evaluator, record.fingerprint)
            if row is None:  # cannot happen: DO NOTHING waits for the winner's commit
                raise StorageError(f"storage: {self.masked_url}: lost success row {values}")
            return evaluation_record(row)

    def get_evaluation_files(
        self, arch_id: str, evaluator: str, fingerprint: str
    ) -> dict[str, bytes]:
        """The files stored with the evaluation ``(arch_id, evaluator, fingerprint)``, by name."""
        query = select(EvaluationFileRow).where(
            EvaluationFileRow.arch_id == arch_id,
            EvaluationFileRow.evaluator == evaluator,
            EvaluationFileRow.fingerprint == fingerprint,
        )
        with self._session() as session:
            return {row.name: bytes(row.data) for row in session.scalars(query)}

    def list_evaluations(
        self, arch_id: str | None = None, evaluator: str | None = None
    ) -> list[EvaluationRecord]:
        """Every evaluation (successes and failures) in insertion order, optionally filtered."""
        query = select(EvaluationRow).order_by(EvaluationRow.id)
        if arch_id is not None:
            query = query.where(EvaluationRow.arch_id == arch_id)
        if evaluator is not None:
            query = query.where(EvaluationRow.evaluator == evaluator)
        with self._session() as session:
            return [evaluation_record(row) for row in session.scalars(query)]

    def put_latency_profile(
        self,
        arch_id: str,
        fingerprint: str,
        *,
        hardware: Mapping[str, object],
        p10_ms: float,
        median_ms: float,
        p90_ms: float,
        runs: int,
        processes: int,
        seconds: float,
        reference_ratio: float | None = None,
        kernel_paths: list[dict[str, Any]] | None = None,
        replace: bool = False,
    ) -> LatencyProfileRecord:
        """Store one measured latency of ``arch_id`` on the hardware ``fingerprint``.

        ``hardware`` holds exactly the fingerprint's fields: cpu, cores,
        ort_version, provider, threads, batch_size, precision. If a profile is
        already stored for (arch_id, fingerprint) (another process won the
        race), nothing is written and the stored one is returned — unless
        ``replace`` (a deliberate re-measurement), which replaces it.

        Example:
            >>> store = Store("sqlite:///:memory:")
            >>> hardware = dict(cpu="x86", cores=8, ort_version="1.18", threads=1,
            ...                 provider="CPUExecutionProvider", batch_size=1, precision="int8")
            >>> store.put_latency_profile("a1", "f" * 64, hardware=hardware, p10_ms=1.0,
            ...                           median_ms=1.2, p90_ms=1.5, runs=50, processes=3,
            ...                           seconds=4.0).median_ms
            1.2
            >>> store.get_latency_profile("a1", "f" * 64).hardware["cores"]
            8
            >>> store.close()

        Raises:
            ValueError: a hardware field is missing, unknown or of the wrong type; a
                number is not finite (or negative); ``kernel_paths`` is not a list of
                JSON objects; a string is too long.
        """
        _check_length("arch_id", arch_id, ARCH_ID_LENGTH)
        _check_length("fingerprint", fingerprint, FINGERPRINT_LENGTH)
        paths = encode_kernel_paths(kernel_paths)
        ratio = (
            None if reference_ratio is None else check_finite("reference_ratio", reference_ratio, 0)
        )
        record = LatencyProfileRecord(
            arch_id=arch_id,
            fingerprint=fingerprint,
            **clean_hardware(hardware),
            p10_ms=check_finite("p10_ms", p10_ms, 0),
            median_ms=check_finite("median_ms", median_ms, 0),
            p90_ms=check_finite("p90_ms", p90_ms, 0),
            runs=check_int("runs", runs, 1),
            processes=check_int("processes", processes, 1),
            reference_ratio=ratio,
            kernel_paths=None if paths is None else json.loads(paths),
            seconds=check_finite("seconds", seconds, 0),
            created_at=utcnow(),
        )
        values = dict(vars(record), kernel_paths=paths)
        with self._session() as session:
            if replace:
                session.execute(
                    delete(LatencyProfileRow).where(
                        LatencyProfileRow.arch_id == arch_id,
                        LatencyProfileRow.fingerprint == fingerprint,
                    )
                )
            target = dict(index_elements=["arch_id", "fingerprint"])
            if self._insert_ignoring_conflict(session, LatencyProfileRow, values, **target):
                return record
            row = _profile(session, arch_id, fingerprint)
            if row is None:  # cannot happen: DO NOTHING waits for the winner's commit
                raise StorageError(f"storage: {self.masked_url}: lost latency profile {values}")
            return latency_profile_record(row)

    def get_latency_profile(self, arch_id: str, fingerprint: str) -> LatencyProfileRecord | None:
        """The stored profile of ``arch_id`` on ``fingerprint``, or None."""
        with self._session() as session:
            row = _profile(session, arch_id, fingerprint)
            return None if row is None else latency_profile_record(row)

    def list_latency_profiles(
        self, *, fingerprint: str | None = None, arch_id: str | None = None
    ) -> list[LatencyProfileRecord]:
        """Every stored profile, oldest first, optionally filtered."""
        query = select(LatencyProfileRow).order_by(
            LatencyProfileRow.created_at, LatencyProfileRow.id
        )
        if fingerprint is not None:
            query = query.where(LatencyProfileRow.fingerprint == fingerprint)
        if arch_id is not None:
            query = query.where(LatencyProfileRow.arch_id == arch_id)
        with self._session() as session:
            return [latency_profile_record(row) for row in session.scalars(query)]

    def put_latency_kernels(
        self, fingerprint: str, rows: Iterable[tuple[Mapping[str, Any], str, float]]
    ) -> int:
        """Store measured kernels ``(key, path, ms)`` in one transaction; how many were new.

        A key already stored for ``fingerprint`` (or repeated in ``rows``: the
        first wins) is skipped. Keys are looked up by :func:`kernel_key_hash`.

        Example:
            >>> from nas.storage import kernel_key_hash
            >>> store = Store("sqlite:///:memory:")
            >>> rows = [({"op": "conv", "k": 3}, "float:Conv", 0.2),
            ...         ({"op": "relu"}, "float:Relu", 0.01)]
            >>> store.put_latency_kernels("f" * 64, rows), store.put_latency_kernels("f" * 64, rows)
            (2, 0)
            >>> store.get_latency_kernels("f" * 64)[kernel_key_hash({"k": 3, "op": "conv"})].path
            'float:Conv'
            >>> store.close()

        Raises:
            ValueError: a row is not ``(dict, str, finite number >= 0)``, a key is
                not JSON, or a string is too long.
        """
        _check_length("fingerprint", fingerprint, FINGERPRINT_LENGTH)
        values = _kernel_values(fingerprint, rows)
        # One order for every writer: two PostgreSQL transactions inserting
        # overlapping keys in different orders could deadlock.
        ordered = [values[key_hash] for key_hash in sorted(values)]
        with self._session() as session:
            return self._insert_many_ignoring_conflict(session, LatencyKernelRow, ordered)

    def get_latency_kernels(self, fingerprint: str) -> dict[str, LatencyKernelRecord]:
        """Every kernel measured on ``fingerprint``, keyed by :func:`kernel_key_hash`."""
        query = select(LatencyKernelRow).where(LatencyKernelRow.fingerprint == fingerprint)
        with self._session() as session:
            return {row.key_hash: latency_kernel_record(row) for row in session.scalars(query)}

    def put_latency_predictor(
        self,
        fingerprint: str,
        *,
        hardware: Mapping[str, object],
        model: Mapping[str, Any],
        n_kernels: int,
        n_models: int,
    ) -> LatencyPredictorRecord:
        """Store the fitted predictor of ``fingerprint``, replacing any stored one.

        ``model`` is any JSON object (finite numbers only); recalibrating a
        fingerprint overwrites its predictor.

        Example:
            >>> store = Store("sqlite:///:memory:")
            >>> hardware = dict(cpu="x86", cores=8, ort_version="1.18", threads=1,
            ...                 provider="CPUExecutionProvider", batch_size=1, precision="int8")
            >>> store.put_latency_predictor("f" * 64, hardware=hardware, model={"scale": 1.1},
            ...                             n_kernels=40, n_models=12).model
            {'scale': 1.1}
            >>> store.close()

        Raises:
            ValueError: a hardware field is missing, unknown or of the wrong type;
                ``model`` is not a JSON object or holds a non-finite number.
        """
        _check_length("fingerprint", fingerprint, FINGERPRINT_LENGTH)
        values = dict(
            fingerprint=fingerprint,
            hardware=encode_json("hardware", clean_hardware(hardware)),
            model=encode_object("model", model),
            n_kernels=check_int("n_kernels", n_kernels, 0),
            n_models=check_int("n_models", n_models, 0),
            created_at=utcnow(),
        )
        with self._session() as session:
            self._replace(session, LatencyPredictorRow, values, key=["fingerprint"])
        return latency_predictor_record(LatencyPredictorRow(**values))

    def get_latency_predictor(self, fingerprint: str) -> LatencyPredictorRecord | None:
        """The predictor stored for ``fingerprint``, or None."""
        with self._session() as session:
            row = session.get(LatencyPredictorRow, fingerprint)
            return None if row is None else latency_predictor_record(row)

    def list_latency_predictors(self) -> list[LatencyPredictorRecord]:
        """Every stored predictor, by fingerprint."""
        query = select(LatencyPredictorRow).order_by(LatencyPredictorRow.fingerprint)
        with self._session() as session:
            return [latency_predictor_record(row) for row in session.scalars(query)]

    def _insert_many_ignoring_conflict(
        self, session: Session, model: type[Base], rows: list[dict[str, Any]]
    ) -> int:
        """Multi-row INSERT ... ON CONFLICT DO NOTHING; how many rows were inserted."""
        insert = _UPSERT_INSERT.get(self._engine.dialect.name)
        if insert is None:
            return sum(self._insert_ignoring_conflict(session, model, values) for values in rows)
        inserted = 0
        for start in range(0, len(rows), _BATCH_ROWS):
            statement = insert(model).values(rows[start : start + _BATCH_ROWS])
            result = session.execute(
                statement.on_conflict_do_nothing(),
                execution_options={"preserve_rowcount": True},
            )
            inserted += result.rowcount  # type: ignore[attr-defined]
        return inserted

    def _replace(
        self, session: Session, model: type[Base], values: dict[str, Any], key: list[str]
    ) -> None:
        """INSERT, or UPDATE the row whose ``key`` columns match (atomically, where supported)."""
        insert = _UPSERT_INSERT.get(self._engine.dialect.name)
        if insert is None:
            session.merge(model(**values))
            return
        statement = insert(model).values(**values)
        changed = {name: statement.excluded[name] for name in values if name not in key}
        session.execute(statement.on_conflict_do_update(index_elements=key, set_=changed))

    def optuna_storage(self) -> optuna.storages.RDBStorage:
        """Optuna's RDB storage on the same database (created once, then reused).

        Its heartbeat settings say when a RUNNING trial whose driver sends no more
        heartbeats is stale: after ``heartbeat_grace`` seconds (the store's argument);
        the driver beats every quarter of that (``nas.workers`` records them).
        """
        if self._optuna is None:
            import optuna  # the store itself does not need Optuna

            kwargs = engine_kwargs(self._engine.url)
            with open_errors(self._url):
                self._optuna = optuna.storages.RDBStorage(
                    self._url,
                    engine_kwargs=kwargs,
                    heartbeat_interval=max(1, self._grace // 4),
                    grace_period=self._grace,
                )
            tune_sqlite(self._optuna.engine)
        return self._optuna

    def close(self) -> None:
        """Release every connection (ours and Optuna's storage's)."""
        if self._optuna is not None:
            self._optuna.remove_session()
            self._optuna.engine.dispose()
            self._optuna = None
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.masked_url!r})"


def _success(
    session: Session, arch_id: str, evaluator: str, fingerprint: str
) -> EvaluationRow | None:
    query = select(EvaluationRow).where(
        EvaluationRow.arch_id == arch_id,
        EvaluationRow.evaluator == evaluator,
        EvaluationRow.fingerprint == fingerprint,
        EvaluationRow.error.is_(None),
    )
    return session.scalars(query).one_or_none()


def _profile(session: Session, arch_id: str, fingerprint: str) -> LatencyProfileRow | None:
    query = select(LatencyProfileRow).where(
        LatencyProfileRow.arch_id == arch_id, LatencyProfileRow.fingerprint == fingerprint
    )
    return session.scalars(query).one_or_none()


def _kernel_values(
    fingerprint: str, rows: Iterable[tuple[Mapping[str, Any], str, float]]
) -> dict[str, dict[str, Any]]:
    """The checked column values of ``rows`` by key hash; a repeated key keeps its first."""
    created_at = utcnow()
    values: dict[str, dict[str, Any]] = {}
    for number, row in enumerate(rows):
        try:
            key, path, ms = row
        except (TypeError, ValueError):
            raise ValueError(
                f"rows[{number}] must be a (key, path, ms) tuple, but got {row!r}"
            ) from None
        text = canonical_json(key, f"rows[{number}] key")
        path = check_text(f"rows[{number}] path", path, NAME_LENGTH)
        ms = check_finite(f"rows[{number}] ms", ms, 0)
        key_hash = key_hash_of(text)
        values.setdefault(key_hash, dict(fingerprint=fingerprint, key_hash=key_hash, key=text,
                                         path=path, ms=ms, created_at=created_at))  # fmt: skip
    return values


def _check_length(field: str, value: str, limit: int) -> None:
    if len(value) > limit:
        raise ValueError(f"{field} must be at most {limit} characters, but got {len(value)}")
