"""The store: architectures and evaluations next to Optuna's tables."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from operator import index
from types import TracebackType
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, func, inspect, select
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
    EvaluationRow,
    utcnow,
)
from ._records import (
    ArchitectureRecord,
    EvaluationRecord,
    architecture_record,
    clean_metrics,
    encode_metrics,
    evaluation_record,
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


class Store:
    """Architectures and their evaluations, in the database that holds the study.

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

    def __init__(self, url: str, *, create: bool = True) -> None:
        self._url = url
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
    ) -> EvaluationRecord:
        """Store one evaluation in one transaction; ``error`` None means success.

        If a success is already stored for the key (another driver won the
        race), nothing is written and the stored one is returned.

        Raises:
            StorageError: ``arch_id`` is not stored (call :meth:`put_architecture` first).
            ValueError: a metric is not a real number, or a key is too long.
        """
        _check_length("arch_id", arch_id, ARCH_ID_LENGTH)
        _check_length("evaluator", evaluator, NAME_LENGTH)
        _check_length("fingerprint", fingerprint, FINGERPRINT_LENGTH)
        record = EvaluationRecord(
            arch_id, evaluator, fingerprint, clean_metrics(metrics), float(seconds), utcnow(), error
        )
        try:
            return self._write_evaluation(record)
        except IntegrityError as exc:
            raise StorageError(
                f"storage: cannot store the evaluation of arch_id {arch_id!r}: "
                "the architecture is not stored (call put_architecture first)"
            ) from exc

    def _write_evaluation(self, record: EvaluationRecord) -> EvaluationRecord:
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
                return record
            row = _success(session, record.arch_id, record.evaluator, record.fingerprint)
            if row is None:  # cannot happen: DO NOTHING waits for the winner's commit
                raise StorageError(f"storage: {self.masked_url}: lost success row {values}")
            return evaluation_record(row)

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

    def optuna_storage(self) -> optuna.storages.RDBStorage:
        """Optuna's RDB storage on the same database (created once, then reused)."""
        if self._optuna is None:
            import optuna  # the store itself does not need Optuna

            kwargs = engine_kwargs(self._engine.url)
            with open_errors(self._url):
                self._optuna = optuna.storages.RDBStorage(self._url, engine_kwargs=kwargs)
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


def _check_length(field: str, value: str, limit: int) -> None:
    if len(value) > limit:
        raise ValueError(f"{field} must be at most {limit} characters, but got {len(value)}")
