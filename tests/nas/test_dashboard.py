"""The study is served by optuna-dashboard's own WSGI app; its JSON API shows our attrs."""

from __future__ import annotations

import io
import json
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest

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
