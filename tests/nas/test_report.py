"""``nas report`` (``nas._report.write_report``): one offline HTML page, each section checked."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import optuna
import pytest
from cli_helpers import assert_rejected, run_cli
from plotly.offline import get_plotlyjs
from scipy.stats import spearmanr

import nas
import nas.evaluators._predictor as predictor_mod
from nas._api import _feasible, _front
from nas._report import latency_pairs, proxy_correlations, write_report
from nas.evaluators._latency import LatencySettings
from nas.evaluators._predictor import LatencyPredictor
from nas.storage import Store

LIMIT = 400_000.0
SECTIONS = ("settings", "trials", "progress", "pareto", "proxies", "latency", "failures")


@pytest.fixture(scope="module")
def proxy_study(tmp_path_factory: pytest.TempPathFactory) -> optuna.Study:
    url = f"sqlite:///{tmp_path_factory.mktemp('report') / 'nas.db'}"
    study = nas.search({"trials": 12, "storage": url, "constraints": {"macs": LIMIT}}).study
    assert {_feasible(t) for t in study.trials} == {True, False}
    return study


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> optuna.Study:
    """synflow and one epoch of training: val_acc and proxies on the same trials."""
    url = f"sqlite:///{tmp_path_factory.mktemp('trained') / 'nas.db'}"
    config = {
        "evaluators": ["synflow", {"name": "train", "settings": {"epochs": 1}}],
        "objectives": ["maximize:val_acc", "macs"],
        "trials": 6,
        "storage": url,
    }
    return nas.search(config).study


def section(page: str, key: str) -> str:
    match = re.search(rf'<section id="{key}">(.*?)</section>', page, re.S)
    assert match, f"no section {key}"
    return match.group(1)


def figures(page: str) -> list[tuple[list[dict[str, Any]], dict[str, Any]]]:
    """The data and layout of every Plotly.newPlot call on the page."""
    decoder = json.JSONDecoder()
    out = []
    for m in re.finditer(r"Plotly\.newPlot\(\s*\"[^\"]+\",\s*", page):
        data, end = decoder.raw_decode(page, m.end())
        layout, _ = decoder.raw_decode(page, page.index("{", end))
        out.append((data, layout))
    return out


def cells(table_html: str, key: str) -> list[str]:
    match = re.search(rf'<tr data-key="{re.escape(key)}">(.*?)</tr>', table_html)
    assert match, f"no row {key}"
    return [html.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", match.group(1))]


def test_every_section_of_a_proxy_search(proxy_study: optuna.Study, tmp_path: Path) -> None:
    page = write_report(proxy_study, tmp_path / "report.html").read_text(encoding="utf-8")
    for key in SECTIONS:
        assert f'<section id="{key}">' in page and f'href="#{key}"' in page

    settings = section(page, "settings")
    for text in ("cnn-small", "digits", "naswot", "maximize:naswot, minimize:macs", "tpe"):
        assert f"<td>{text}" in settings, text
    assert "<td>macs ≤ 400,000</td>" in settings

    counts = section(page, "trials")
    feasible = sum(_feasible(t) for t in proxy_study.trials)
    assert '<td>complete</td><td class="num">12</td>' in counts
    assert f'<td>feasible (complete, within every limit)</td><td class="num">{feasible}</td>' in (
        counts
    )

    front = section(page, "pareto")
    for t in _front(proxy_study):
        assert f"<td>{html.escape(t.user_attrs['arch'])}</td>" in front
        assert f"<td>{t.user_attrs['arch_id']}</td>" in front

    assert "no trial has both val_acc and a proxy metric." in section(page, "proxies")
    assert "the study has no latency evaluator." in section(page, "latency")
    assert "no trial failed." in section(page, "failures")
    assert "no trial was pruned." in section(page, "failures")

    # plotly.js once, inlined; the progress and Pareto figures use it; nothing is fetched.
    assert page.count(get_plotlyjs()[:300]) == 1
    assert len(figures(page)) == 2
    assert not re.search(r"<script[^>]*\bsrc=", page) and "<link" not in page


def test_best_so_far_by_trial_and_by_wall_time(proxy_study: optuna.Study, tmp_path: Path) -> None:
    page = write_report(proxy_study, tmp_path / "report.html").read_text(encoding="utf-8")
    data, _ = figures(section(page, "progress"))[0]
    feasible = sorted((t for t in proxy_study.trials if _feasible(t)), key=lambda t: t.number)
    best_naswot: list[float] = []
    best_macs: list[float] = []
    for t in feasible:
        best_naswot.append(max([*best_naswot[-1:], t.values[0]]))
        best_macs.append(min([*best_macs[-1:], t.values[1]]))
    by_trial = [d for d in data if d["name"].startswith("best") and d["xaxis"] in ("x", "x3")]
    assert [d["x"] for d in by_trial] == [[t.number for t in feasible]] * 2
    assert [d["y"] for d in by_trial] == [best_naswot, best_macs]
    start = min(t.datetime_start for t in proxy_study.trials if t.datetime_start is not None)
    [by_time] = [d for d in data if d["name"] == "best naswot" and d["xaxis"] == "x2"]
    done = sorted((t.datetime_complete, t.values[0]) for t in feasible if t.datetime_complete)
    assert by_time["x"] == pytest.approx([(end - start).total_seconds() for end, _ in done])
    assert by_time["y"] == [max(v for _, v in done[: i + 1]) for i in range(len(done))]


@pytest.mark.slow  # six trainings
def test_spearman_is_scipys_on_the_same_trials(trained: optuna.Study, tmp_path: Path) -> None:
    rows = {r["proxy"]: r for r in proxy_correlations(trained)}
    assert set(rows) == {"synflow", "params", "macs"}  # naswot was not evaluated
    page = write_report(trained, tmp_path / "report.html").read_text(encoding="utf-8")
    table = section(page, "proxies")
    for proxy, row in rows.items():
        xs = [t.user_attrs[proxy] for t in trained.trials]
        ys = [t.user_attrs["val_acc"] for t in trained.trials]
        expected = spearmanr(xs, ys)
        assert row["trials"] == 6
        assert row["spearman"] == pytest.approx(float(expected.statistic), abs=1e-12)
        assert row["p_value"] == pytest.approx(float(expected.pvalue), abs=1e-12)
        shown = cells(table, proxy)
        assert shown[:3] == [proxy, "6", f"{expected.statistic:.4f}"]


def test_failures_pruning_and_escaping(db_url: str, tmp_path: Path) -> None:
    """A study made by hand (not by nas search): reasons counted, every string escaped."""
    Store(db_url).close()
    name = "a<b>study"
    study = optuna.create_study(study_name=name, storage=db_url, directions=["maximize"])
    for reason, value in [(None, 1.0), ("diverged: <loss> nan", None), (None, 2.0)] * 2:
        trial = study.ask()
        if reason is None:
            study.tell(trial, value)
        else:
            trial.set_user_attr("error", reason)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
    trial = study.ask()
    trial.set_user_attr("error", "out of memory")
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    trial = study.ask()
    trial.report(0.5, step=3)
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)

    page = write_report(study, tmp_path / "r.html").read_text(encoding="utf-8")
    failures = section(page, "failures")
    assert (
        '<tr><td>diverged: &lt;loss&gt; nan</td><td class="num">2</td><td>1, 4</td></tr>'
        in failures
    )
    assert '<tr><td>out of memory</td><td class="num">1</td><td>6</td></tr>' in failures
    assert "<p>pruned: 1 (1 at step 3); trials 7</p>" in failures
    assert "<loss>" not in page and "a<b>" not in page and "a&lt;b&gt;study" in page
    assert "not created by nas search." in section(page, "settings")
    assert "no trial has both val_acc" in section(page, "proxies")


def _fake_kernels(kernels: Any, settings: LatencySettings) -> list[float]:
    """Kernel "timings" from their MACs: no ONNX Runtime, and the same every time."""
    return [0.01 + k.features[0] * 1e-6 for k in kernels]


def test_latency_predictions_against_measurements(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(predictor_mod, "measure_kernels", _fake_kernels)
    settings = LatencySettings(processes=1, runs=20)
    with Store(db_url) as store:
        LatencyPredictor(settings, {}, (1.2, 0.01, 0.05), store=store).save(store, n_models=3)
    latency = {"name": "latency", "settings": {"mode": "predict", "processes": 1, "runs": 20}}
    config = {
        "evaluators": [latency, "naswot"],
        "objectives": ["maximize:naswot", "latency_ms"],
        "trials": 4,
        "storage": db_url,
    }
    study = nas.search(config).study
    report = tmp_path / "report.html"
    page = write_report(study, report).read_text(encoding="utf-8")
    assert "no trial has both a prediction and a measurement" in section(page, "latency")

    # Two of the architectures measured (made-up numbers) on the predictor's fingerprint.
    fingerprint = settings.fingerprint()
    measured = {}
    with Store(db_url) as store:
        for t, factor in zip(study.trials[:2], (1.25, 0.8), strict=True):
            assert t.user_attrs["latency_measured"] == 0.0  # the search used a prediction
            ms = t.user_attrs["latency_ms"] * factor
            measured[t.user_attrs["arch_id"]] = (t, ms)
            timing = {"p10_ms": ms, "median_ms": ms, "p90_ms": ms, "runs": 20, "processes": 1}
            hardware = settings.hardware().as_dict()
            arch_id = t.user_attrs["arch_id"]
            store.put_latency_profile(
                arch_id, fingerprint, hardware=hardware, seconds=0.1, **timing
            )
    pairs, why = latency_pairs(study, db_url)
    assert why == "" and {p.arch_id for p in pairs} == set(measured)
    for p in pairs:
        trial, ms = measured[p.arch_id]
        # The recomputed prediction is the one the search made; nothing was measured for it.
        assert p.predicted_ms == pytest.approx(trial.user_attrs["latency_ms"], rel=1e-12)
        assert p.measured_ms == ms and trial.number in p.trials
        assert p.rel_error == pytest.approx(1 / (ms / trial.user_attrs["latency_ms"]) - 1)
    page = write_report(study, report).read_text(encoding="utf-8")
    shown = section(page, "latency")
    assert "2 architectures; mean |error| 22.5%, max 25.0%" in shown
    assert "<td>-20.0%</td>" in shown and "<td>+25.0%</td>" in shown
    assert len(figures(shown)) == 1


def test_cli_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "nas.db"
    url = f"sqlite:///{db}"
    nas.search({"trials": 3, "storage": url})
    out = tmp_path / "report.html"
    code, stdout, err = run_cli(["report", "nas", "--storage", url, "--out", str(out)], capsys)
    assert code == 0 and stdout == f"{out}\n", err
    assert '<section id="pareto">' in out.read_text(encoding="utf-8")
    cases = {
        "no study": (["nope", "--out", "r.html"], "study: no study 'nope' in"),
        "suffix": (["nas", "--out", "r.pdf"], "out: 'r.pdf' must end in .html or .htm"),
        "no dir": (["nas", "--out", str(tmp_path / "x" / "r.html")], "does not exist"),
    }
    assert_rejected(cases, ["report", "--storage", url], db, capsys)
    assert not (tmp_path / "r.html").exists()
