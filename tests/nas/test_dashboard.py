"""The study is served by optuna-dashboard's own WSGI app; its JSON API shows our attrs."""

from __future__ import annotations

import io
import json
import socket
import urllib.request
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
from cli_helpers import assert_rejected

import nas

optuna_dashboard = pytest.importorskip("optuna_dashboard")


def get_json(app: Any, path: str) -> Any:
    environ: dict[str, Any] = {"PATH_INFO": path, "REQUEST_METHOD": "GET"}
    setup_testing_defaults(environ)
    environ["wsgi.input"] = io.BytesIO()
    status: list[str] = []
    body = b"".join(app(environ, lambda s, h, exc_info=None: status.append(s)))
    assert status[0].startswith("200"), (path, status, body[:200])
    return json.loads(body)


def test_dashboard_json_api_shows_trials_and_user_attrs(db_url: str) -> None:
    result = nas.search({"trials": 5, "storage": db_url})
    app = optuna_dashboard.wsgi(db_url)
    studies = get_json(app, "/api/studies")["study_summaries"]
    [summary] = [s for s in studies if s["study_name"] == "nas"]
    detail = get_json(app, f"/api/studies/{summary['study_id']}")
    trials = detail["trials"]
    assert len(trials) == 5
    for trial, ours in zip(trials, result.study.trials, strict=True):
        attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
        assert attrs["arch_id"] == ours.user_attrs["arch_id"]
        assert float(attrs["naswot"]) == pytest.approx(ours.user_attrs["naswot"])
        assert "macs" in attrs and "arch" in attrs
    assert detail["objective_names"] == ["naswot", "macs"]
    assert {"arch_id", "naswot", "macs"} <= {a["key"] for a in detail["union_user_attrs"]}


def test_dashboard_url() -> None:
    from nas._dashboard import dashboard_url

    assert dashboard_url("127.0.0.1", 8080, 3) == "http://127.0.0.1:8080/dashboard/studies/3"
    assert dashboard_url("::1", 80) == "http://[::1]:80/dashboard"
    assert "0.0.0.0" not in dashboard_url("0.0.0.0", 8080)  # a name another machine can use


def test_nas_dashboard_rejects_in_one_line(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nas.search({"trials": 2, "storage": db_url})
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        cases = {
            "no such study": (["nope", "--storage", db_url], "study: no study 'nope' in"),
            "port in use": (
                ["nas", "--storage", db_url, "--port", port],
                f"port: 127.0.0.1:{port} is in use; give another --port",
            ),
            "port not a number": (["nas", "--port", "http"], "port: expected a whole number"),
            "port out of range": (["nas", "--port", "70000"], "port: must be in 0..65535"),
            "no artifact directory": (
                ["nas", "--storage", db_url, "--port", "0", "--artifacts", "missing"],
                "artifacts: 'missing' is not a directory",
            ),
            "no studies": (["--storage", empty, "--port", "0"], "storage: no studies in"),
        }
        assert_rejected(cases, ["dashboard"], Path(db_url.removeprefix("sqlite:///")), capsys)


def test_no_artifact_directory_is_said(capsys: pytest.CaptureFixture[str]) -> None:
    from nas._dashboard import _artifact_store

    assert _artifact_store([], None) is None
    assert "serving without artifacts" in capsys.readouterr().err


@pytest.mark.slow
def test_nas_dashboard_serves_the_study_until_ctrl_c(db_url: str) -> None:
    from dashboard_browser import dashboard

    result = nas.search({"trials": 2, "storage": db_url})
    with dashboard(db_url, "nas") as running:
        study_id = result.study._study_id
        assert running.url.endswith(f"/dashboard/studies/{study_id}")
        base = running.url.split("/dashboard")[0]
        with urllib.request.urlopen(running.url, timeout=30) as page:
            assert b"<html" in page.read().lower()
        with urllib.request.urlopen(f"{base}/api/studies/{study_id}", timeout=30) as api:
            detail = json.loads(api.read())
        assert len(detail["trials"]) == 2
        assert running.stop() == 0, running.stderr()
        assert running.stderr().strip().endswith("dashboard stopped"), running.stderr()
