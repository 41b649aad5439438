"""Backends for the storage suite: a SQLite file, and a real PostgreSQL.

PostgreSQL is the session's ``postgres_server`` (tests/conftest.py); each test
gets a database of its own.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from nas.storage import Store


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """A store on an empty database of each backend."""
    with Store(store_url) as opened:
        yield opened
