from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from postgres_server import PostgresServer, start_server


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """A fresh SQLite database file for one test."""
    return f"sqlite:///{tmp_path / 'nas.db'}"


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `nas search` with no --storage writes ./nas.db: never into the checkout.
    monkeypatch.chdir(tmp_path)
    os.environ.setdefault("COLUMNS", "200")


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """One private Ray cluster for the whole test session (tests marked ``ray`` use it).

    Its workers find the test helpers (the misbehaving evaluators) on PYTHONPATH.
    """
    import ray

    helpers = str(Path(__file__).parent / "helpers")
    path = os.pathsep.join([helpers, *filter(None, [os.environ.get("PYTHONPATH")])])
    ray.init(
        address="local",
        num_cpus=4,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL for the whole session (tests marked ``postgres``), removed at its end."""
    yield from start_server()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'nas.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database()
