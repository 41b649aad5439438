"""Pareto plots (``nas._plots``, ``nas pareto --plot``): what the HTML and the PNG really hold."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from cli_helpers import assert_rejected, run_cli
from matplotlib.image import imread

import nas
from nas._api import _feasible, _front
from nas._errors import ConfigError
from nas._plots import FRONT, pareto_data, pareto_figure, write_pareto_plot

LIMIT = 400_000.0  # macs: between the smallest and largest of the searched networks


@pytest.fixture(scope="module")
def constrained(tmp_path_factory: pytest.TempPathFactory) -> optuna.Study:
    """naswot against macs with a macs limit; some trials within it, some over it."""
    url = f"sqlite:///{tmp_path_factory.mktemp('plots') / 'nas.db'}"
    study = nas.search({"trials": 14, "storage": url, "constraints": {"macs": LIMIT}}).study
    states = {_feasible(t) for t in study.trials}
    assert states == {True, False}, "the limit should split the trials"
    return study


def figure_json(page: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The data and layout that the page hands to Plotly.newPlot (one figure per page)."""
    [start] = [m.end() for m in re.finditer(r"Plotly\.newPlot\(\s*\"[^\"]+\",\s*", page)]
    decoder = json.JSONDecoder()
    data, end = decoder.raw_decode(page, start)
    layout, _ = decoder.raw_decode(page, page.index("{", end))
    return data, layout


def trace(data: list[dict[str, Any]], name: str) -> dict[str, Any]:
    [found] = [t for t in data if t.get("name") == name]
    return found


def test_html_holds_every_trial_the_front_and_the_limit(
    constrained: optuna.Study, tmp_path: Path
) -> None:
    page = write_pareto_plot(constrained, tmp_path / "pareto.html").read_text(encoding="utf-8")
    data, layout = figure_json(page)
    front = {t.number: t for t in _front(constrained)}
    assert front
    shown = trace(data, "Pareto front")
    assert [row[0] for row in shown["customdata"]] == sorted(front)  # trial numbers
    for number, arch_id, arch in shown["customdata"]:
        assert (arch_id, arch) == (
            front[number].user_attrs["arch_id"],
            front[number].user_attrs["arch"],
        )
    hover = dict(zip((row[0] for row in shown["customdata"]), shown["hovertext"], strict=True))
    for number, t in front.items():
        assert f"trial {number}" in hover[number] and t.user_attrs["arch"] in hover[number]
        assert f"naswot: {t.values[0]:.4g}" in hover[number]
    assert {label.lstrip("#") for label in shown["text"] if label} <= {str(n) for n in front}

    infeasible = trace(data, "infeasible")
    expected = sorted(t.number for t in constrained.trials if not _feasible(t))
    assert [row[0] for row in infeasible["customdata"]] == expected
    assert infeasible["marker"]["symbol"] == "x"
    feasible = trace(data, "feasible")
    assert len(feasible["x"]) + len(shown["x"]) == sum(_feasible(t) for t in constrained.trials)

    [line] = layout["shapes"]
    assert (line["x0"], line["x1"], line["line"]["dash"]) == (LIMIT, LIMIT, "dash")
    assert any(a["text"] == "limit: macs ≤ 400,000" for a in layout["annotations"])
    assert layout["xaxis"]["title"]["text"] == "macs (minimize)"
    assert layout["yaxis"]["title"]["text"] == "naswot (maximize)"

    assert not re.search(r"<script[^>]*\bsrc=", page)  # plotly.js inlined, nothing fetched
    assert "<link" not in page and len(page) > 1_000_000


def test_the_step_line_joins_the_front_in_order(constrained: optuna.Study) -> None:
    data = pareto_data(constrained)
    steps = sorted((t.values[1], t.values[0]) for t in _front(constrained))
    assert data.steps == sorted(set(steps))  # 2 objectives: the whole front, by macs
    line = trace(pareto_figure(constrained).to_dict()["data"], "front (step)")
    assert list(zip(line["x"], line["y"], strict=True)) == data.steps
    assert line["line"]["shape"] == "hv"  # minimized x: right, then up to the next point
    assert data.limits == {"macs": LIMIT}


def test_png_is_a_picture_of_the_plot(constrained: optuna.Study, tmp_path: Path) -> None:
    path = write_pareto_plot(constrained, tmp_path / "pareto.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = imread(path)
    assert pixels.shape[0] >= 500 and pixels.shape[1] >= 800 and pixels.shape[2] in (3, 4)
    red = np.array([int(FRONT[i : i + 2], 16) / 255 for i in (1, 3, 5)])
    front_pixels = np.all(np.abs(pixels[..., :3] - red) < 0.03, axis=-1).sum()
    assert front_pixels > 200, "the front is not drawn"


def test_any_stored_metric_can_be_an_axis(constrained: optuna.Study) -> None:
    data = pareto_data(constrained, x="params", y="bytes")
    assert (data.x.title, data.y.title) == ("params (minimize)", "bytes (minimize)")
    complete = {t.number: t for t in constrained.trials}
    assert len(data.points) == len(complete)
    for p in data.points:
        attrs = complete[p.trial].user_attrs
        assert (p.x, p.y) == (attrs["params"], attrs["bytes"])
    assert data.limits == {}  # macs is on neither axis
    assert {p.trial for p in data.points if p.front} == {t.number for t in _front(constrained)}


def test_with_three_objectives_the_front_is_the_studys(db_url: str) -> None:
    study = nas.search(
        {
            "trials": 14,
            "storage": db_url,
            "objectives": ["maximize:naswot", "macs", "bytes"],
            "sampler": "random",
        }
    ).study
    data = pareto_data(study)
    front = {t.number for t in _front(study)}
    assert {p.trial for p in data.front} == front
    # The staircase joins the front points that are a front in macs x naswot as well.
    points = {(p.x, p.y) for p in data.front}
    assert set(data.steps) <= points and data.steps
    for sx, sy in data.steps:
        assert not any(x <= sx and y >= sy and (x, y) != (sx, sy) for x, y in points)


def test_log_axis_when_values_span_more_than_two_decades() -> None:
    from nas._plots import _axis

    assert _axis("macs", {}, [1.0, 150.0]).log
    assert not _axis("macs", {}, [1.0, 90.0]).log
    assert not _axis("naswot", {}, [-1.0, 500.0]).log  # a negative value has no log


def test_bad_requests_are_config_errors(constrained: optuna.Study, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"must end in \.html or \.png, got '\.pdf'"):
        write_pareto_plot(constrained, tmp_path / "pareto.pdf")
    with pytest.raises(ConfigError, match="metrics available: naswot, macs, bitops") as info:
        write_pareto_plot(constrained, tmp_path / "pareto.png", x="latency_ms")
    assert info.value.field == "x"
    with pytest.raises(ConfigError, match="'nope'") as info:
        pareto_figure(constrained, y="nope")
    assert info.value.field == "y"
    assert not list(tmp_path.iterdir())


def test_a_study_with_no_complete_trial_is_a_config_error(db_url: str) -> None:
    optuna.create_study(study_name="empty", storage=db_url, directions=["maximize"])
    with pytest.raises(ConfigError, match="study 'empty' has no complete trial to plot"):
        pareto_figure(nas.load_study("empty", db_url))


def test_cli_writes_the_plot_and_keeps_the_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'nas.db'}"
    nas.search({"trials": 6, "storage": url})
    code, table, _ = run_cli(["pareto", "nas", "--storage", url, "-f", "json"], capsys)
    assert code == 0
    out = tmp_path / "front.png"
    args = ["pareto", "nas", "--storage", url, "-f", "json", "--plot", str(out), "--x", "params"]
    code, plotted, err = run_cli(args, capsys)
    assert code == 0 and plotted == table  # standard output is the front, as before
    assert err == f"wrote {out}\n" and imread(out).shape[0] > 0


def test_cli_bad_plot_requests_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "nas.db"
    url = f"sqlite:///{db}"
    nas.search({"trials": 3, "storage": url})
    cases = {
        "extension": (["--plot", "front.pdf"], "plot: 'front.pdf' must end in .html or .png"),
        "no metric": (["--plot", "f.png", "--x", "val_acc"], "x: no complete trial has the"),
        "no dir": (["--plot", str(tmp_path / "no" / "f.png")], "does not exist"),
        "axis alone": (["--y", "params"], "y: chooses an axis of --plot; give --plot"),
    }
    assert_rejected(cases, ["pareto", "nas", "--storage", url], db, capsys)
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".png", ".pdf")) == []
