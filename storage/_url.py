"""Database URLs: masking, engines, and turning open failures into one line."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, NoSuchModuleError, SQLAlchemyError

from nas._errors import StorageError

# Seconds a connection waits: for a SQLite lock, for a PostgreSQL server.
SQLITE_BUSY_TIMEOUT = 30
CONNECT_TIMEOUT = 10

_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*@")


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***``; fit to print or log.

    >>> mask_url("postgresql+psycopg://nas:secret@db:5432/nas")
    'postgresql+psycopg://nas:***@db:5432/nas'
    """
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (SQLAlchemyError, ValueError):  # not parsable: mask by pattern
        return _PASSWORD.sub(r"\1***@", url)


def check_url(url: str) -> None:
    """Raise :class:`StorageError` unless ``url`` names a database that can be opened.

    Creates nothing: a SQLite file that does not exist yet is not created (its
    directory must exist); any other database is connected to and left as is.

    >>> check_url("sqlite:///:memory:")
    """
    with open_errors(url):
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite" and not sqlite_file_exists(parsed):
            return
        engine = make_engine(parsed)
        try:
            with engine.connect() as connection:
                inspect(connection).get_table_names()  # reads the catalogue: a real database?
        finally:
            engine.dispose()


def sqlite_file_exists(url: URL) -> bool:
    """Whether a SQLite URL names an existing file; raise if its directory is missing."""
    database = url.database or ""
    if database in ("", ":memory:") or url.query.get("uri"):
        return False
    directory = Path(database).parent
    if not directory.is_dir():
        raise StorageError(f"directory {str(directory)!r} does not exist")
    return Path(database).exists()


def engine_kwargs(url: URL) -> dict[str, Any]:
    """Keyword arguments for ``create_engine`` (ours and Optuna's) for ``url``."""
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    backend, driver = url.get_backend_name(), url.get_driver_name()
    if backend == "sqlite":
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT}
    elif backend == "postgresql" and driver in ("psycopg", "psycopg2"):
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT}
    elif backend == "postgresql" and driver == "pg8000":
        kwargs["connect_args"] = {"timeout": CONNECT_TIMEOUT}
    return kwargs


def make_engine(url: URL) -> Engine:
    """An engine for ``url``; SQLite gets foreign keys enforced, as PostgreSQL has them."""
    engine = create_engine(url, **engine_kwargs(url))
    tune_sqlite(engine)
    return engine


def tune_sqlite(engine: Engine) -> None:
    """On SQLite files: WAL and ``synchronous=NORMAL``, foreign keys on.

    Optuna commits once per suggested parameter; with the default rollback journal
    each commit waits for an fsync, which dominates a proxy search. WAL keeps
    commits durable against a crash of the process and lets readers (the
    dashboard, ``nas status``) read while a search writes.
    """
    if engine.url.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
        engine.dispose()  # connections made before the listener get the pragmas too


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    if cursor.execute("PRAGMA database_list").fetchone()[2]:  # a file, not :memory:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


@contextmanager
def open_errors(url: str) -> Iterator[None]:
    """Turn any failure to open ``url`` into ``storage: cannot open <masked>: <reason>``."""
    try:
        yield
    except (StorageError, SQLAlchemyError, ImportError, ValueError) as exc:
        reason = short_reason(exc, url)
        raise StorageError(f"storage: cannot open {mask_url(url)}: {reason}") from exc


def short_reason(exc: BaseException, url: str) -> str:
    """The first line of what went wrong, without the password in ``url``."""
    if isinstance(exc, NoSuchModuleError):
        return f"unknown database backend or driver ({exc})"
    if isinstance(exc, ImportError):
        return f"database driver not installed ({exc})"
    if isinstance(exc, ValueError):
        return f"invalid URL ({exc})"
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    reason = lines[0] if lines else type(cause).__name__
    password = _password(url)
    return reason.replace(password, "***") if password else reason


def _password(url: str) -> str | None:
    try:
        return make_url(url).password
    except (SQLAlchemyError, ValueError):
        match = _PASSWORD.search(url)
        return match.group(0)[len(match.group(1)) : -1] if match else None
