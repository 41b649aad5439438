"""How the Ray backend connects: Ray Client's failed server start is tried again, once too
often is one line with the server's own reason (ray.init replaced: no cluster here)."""

from __future__ import annotations

from typing import Any

import pytest

from nas._errors import ConfigError
from nas.workers import _ray

FAILED = (
    "Initialization failure from server:\nTraceback (most recent call last):\n"
    '  File "proxier.py", line 770, in Datapath\n'
    "RuntimeError: Starting Ray client server failed. See ray_client_server_23000.err"
)


class FakeInit:
    def __init__(self, failures: int, error: Exception) -> None:
        self.failures, self.error, self.calls, self.shutdowns = failures, error, 0, 0

    def init(self, **kwargs: Any) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error

    def shutdown(self) -> None:
        self.shutdowns += 1


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Any:
    import ray

    def install(failures: int, error: Exception) -> FakeInit:
        fake = FakeInit(failures, error)
        monkeypatch.setattr(ray, "init", fake.init)
        monkeypatch.setattr(ray, "shutdown", fake.shutdown)
        monkeypatch.setattr("time.sleep", lambda s: None)
        monkeypatch.setenv("RAY_AUTH_MODE", "token")  # leave Ray's config alone
        return fake

    return install


def test_a_failed_client_server_start_is_tried_again(fake: Any) -> None:
    init = fake(2, ConnectionAbortedError(FAILED))
    _ray._connect("ray://127.0.0.1:10001")
    assert init.calls == 3 and init.shutdowns == 2


def test_the_last_failure_is_one_line_with_the_servers_reason(fake: Any) -> None:
    init = fake(9, ConnectionAbortedError(FAILED))
    with pytest.raises(ConfigError) as caught:
        _ray._connect("ray://127.0.0.1:10001")
    assert init.calls == _ray.CLIENT_ATTEMPTS
    message = str(caught.value)
    assert "\n" not in message
    assert "Initialization failure from server: RuntimeError: Starting Ray client" in message


def test_other_addresses_and_errors_are_not_tried_again(fake: Any) -> None:
    init = fake(1, ConnectionAbortedError(FAILED))
    with pytest.raises(ConfigError):
        _ray._connect("127.0.0.1:6379")  # not Ray Client
    assert init.calls == 1
    init = fake(1, ConnectionError("no cluster there"))
    with pytest.raises(ConfigError, match="no cluster there"):
        _ray._connect("ray://127.0.0.1:10001")
    assert init.calls == 1
