"""Opening databases: masked URLs and one-line errors."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from nas._errors import StorageError
from nas.storage import Store, check_url, mask_url

SECRET = "s3cr3t-pw"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (
            f"postgresql+psycopg://nas:{SECRET}@db:5432/nas",
            "postgresql+psycopg://nas:***@db:5432/nas",
        ),
        ("postgresql://nas@db/nas", "postgresql://nas@db/nas"),
        ("sqlite:///nas.db", "sqlite:///nas.db"),
        (f"postgresql://nas:{SECRET}@db:notaport/nas", "postgresql://nas:***@db:notaport/nas"),
        ("not a url", "not a url"),
    ],
)
def test_mask_url_hides_passwords(url: str, masked: str) -> None:
    assert mask_url(url) == masked


BAD_URLS = [
    pytest.param("nosuchdriver://x", "unknown database backend", id="unknown-driver"),
    pytest.param("postgresql+pg8000://u:{pw}@h/d", "driver not installed", id="missing-driver"),
    pytest.param("sqlite:////nonexistent/dir/x.db", "does not exist", id="sqlite-no-dir"),
    pytest.param("postgresql+psycopg://nas:{pw}@127.0.0.1:{port}/nas", "refused", id="closed-port"),
    pytest.param("postgresql://nas:{pw}@db:notaport/nas", "invalid URL", id="bad-port"),
    pytest.param("::", "parse", id="unparsable"),
]


@pytest.mark.parametrize("opener", [Store, check_url], ids=["Store", "check_url"])
@pytest.mark.parametrize(("template", "reason"), BAD_URLS)
def test_bad_url_gives_one_clean_line(opener: object, template: str, reason: str) -> None:
    url = template.format(pw=SECRET, port=_closed_port())
    with pytest.raises(StorageError) as caught:
        opener(url)  # type: ignore[operator]
    message = str(caught.value)
    assert message.startswith(f"storage: cannot open {mask_url(url)}: ")
    assert reason in message
    assert "\n" not in message and "Traceback" not in message
    assert SECRET not in message


def test_check_url_creates_no_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "nas.db"
    check_url(f"sqlite:///{path}")
    assert not path.exists()
    with Store(f"sqlite:///{path}"):
        pass
    check_url(f"sqlite:///{path}")


def test_check_url_rejects_a_file_that_is_no_database(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("not sqlite" * 100)
    with pytest.raises(StorageError, match="not a database"):
        check_url(f"sqlite:///{path}")


def test_repr_masks_the_password() -> None:
    with Store("sqlite://") as store:
        assert repr(store) == "Store('sqlite://')"
        assert store.masked_url == "sqlite://"
