"""Backends for the storage suite: a SQLite file, and a real PostgreSQL.

PostgreSQL is the session's ``postgres_server`` (tests/conftest.py); each test
gets a database of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from postgres_server import PostgresServer

from nas.storage import Store


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'nas.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database()


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """A store on an empty database of each backend."""
    with Store(store_url) as opened:
        yield opened
