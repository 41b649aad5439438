"""`nas dashboard` seen in a real browser: headless Chromium driven by Selenium.

One finished multi-objective study (naswot up, MACs down, a MACs limit so that some
trials are infeasible) is served by ``nas dashboard`` in a subprocess, as a person
would start it; every check reads what optuna-dashboard's single-page app rendered.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import optuna
import pytest
from dashboard_browser import (
    Dashboard,
    chromium,
    dashboard,
    missing_browser,
    pareto_traces,
    trial_item,
    wait_for,
)

import nas

pytestmark = pytest.mark.slow

#: About the median MACs of the study's first 8 (random) candidates: some on each side.
MACS_LIMIT = 720_000


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('dashboard') / 'nas.db'}"


@pytest.fixture(scope="module")
def study(storage: str) -> optuna.Study:
    result = nas.search({"trials": 8, "storage": storage, "constraints": {"macs": MACS_LIMIT}})
    assert result.summary.complete == 8
    return result.study


@pytest.fixture(scope="module")
def server(storage: str, study: optuna.Study) -> Iterator[Dashboard]:
    with dashboard(storage, study.study_name) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    reason = missing_browser()
    if reason is not None:
        pytest.skip(reason)
    with chromium() as driver:
        yield driver


def test_url_is_the_study_page(server: Dashboard, study: optuna.Study) -> None:
    study_id = study._study_id  # optuna-dashboard's pages are by id
    assert server.url.endswith(f"/dashboard/studies/{study_id}"), server.url
    assert "artifacts: " in server.stderr(), server.stderr()


def test_pareto_front_plot_shows_the_feasible_front(
    server: Dashboard, study: optuna.Study, browser: Any
) -> None:
    browser.get(server.url)
    wait_for(browser, _text_present("Pareto Front"), "the Pareto Front card")
    traces = wait_for(browser, pareto_traces, "the Pareto-front plot's data")
    front = {(row["naswot"], row["macs"]) for row in nas.pareto(study)}
    infeasible = {tuple(t.values) for t in study.trials if max(t.constraints.values()) > 0}
    assert front and set(traces["Best Trial"]) == front, traces
    # Drawn as nas sees them: the dashboard is told Optuna 5's constraints.
    assert set(traces.get("Infeasible Trial", [])) == infeasible, traces
    assert sum(map(len, traces.values())) == 8, traces
    points = wait_for(
        browser,
        _found("css selector", "#graph-pareto-front svg path.point"),
        "the Pareto-front plot's points in its SVG",
    )
    assert len(points) == 8


def test_objective_names(server: Dashboard, browser: Any) -> None:
    browser.get(server.url)
    selects = wait_for(
        browser,
        lambda d: [e.text for e in d.find_elements("css selector", "[role=combobox]")] or None,
        "the objective selectors",
    )
    assert {"naswot", "macs"} <= set(selects), selects


def test_trial_list_user_attrs_and_artifacts(
    server: Dashboard, study: optuna.Study, browser: Any
) -> None:
    browser.get(f"{server.url}/trials")
    wait_for(browser, _text_present("8 Trials"), "the trial list's heading")
    for number in range(8):
        wait_for(browser, _found(*trial_item(number)), f"Trial {number} in the list")
    trial = study.trials[nas.pareto(study)[0]["trial"]]
    browser.find_element(*trial_item(trial.number)).click()
    title = f"//h4[starts-with(normalize-space(), 'Trial {trial.number} (')]"
    wait_for(browser, _found("xpath", title), f"trial {trial.number}'s page")
    arch_id = trial.user_attrs["arch_id"]
    attrs = wait_for(
        browser, _user_attrs(arch_id), f"the trial's user attributes with arch_id {arch_id}"
    )
    assert float(attrs["naswot"]) == pytest.approx(trial.user_attrs["naswot"]), attrs
    assert attrs.get("feasible") == "True", attrs

    prefix = f"/artifacts/{study._study_id}/{trial._trial_id}/"
    links = wait_for(
        browser, _artifact_links(prefix), "the trial's artifacts (uploaded by nas search)"
    )
    assert {"model.onnx", "arch.json"} <= set(links), links
    _check_artifacts(links, arch_id)


def _artifact_links(prefix: str) -> Callable[[Any], dict[str, str] | None]:
    """The artifacts listed on a trial's page, name -> download URL, once they are the
    trial's whose URLs start with ``prefix``."""

    def links(driver: Any) -> dict[str, str] | None:
        found = {
            str(e.get_attribute("download")): str(e.get_attribute("href"))
            for e in driver.find_elements("css selector", "a[aria-label='download artifact']")
        }
        ours = all(urllib.parse.urlsplit(url).path.startswith(prefix) for url in found.values())
        return found if found and ours else None

    return links


def _check_artifacts(links: dict[str, str], arch_id: str) -> None:
    """The files the dashboard serves are the trial's: its architecture, an ONNX model."""
    import onnx

    from nas.search_space import architecture_from_json

    arch = _download(links["arch.json"])
    json.loads(arch)
    assert architecture_from_json(arch).arch_id == arch_id
    model = onnx.load_model_from_string(_download(links["model.onnx"]))
    assert len(model.graph.node) > 0


def _download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200, url
        return bytes(response.read())


def _found(by: str, value: str) -> Callable[[Any], list[Any] | None]:
    return lambda driver: driver.find_elements(by, value) or None


def _text_present(text: str) -> Callable[[Any], list[Any] | None]:
    return _found("xpath", f"//*[normalize-space()={json.dumps(text)}]")


def _user_attrs(arch_id: str) -> Callable[[Any], dict[str, str] | None]:
    """The "User Attributes" box of a trial's page as key -> value text, once it is the
    trial's with ``arch_id``."""

    def attrs(driver: Any) -> dict[str, str] | None:
        boxes = driver.find_elements(
            "xpath", "//*[normalize-space()='User Attributes']/following-sibling::*[1]"
        )
        found: dict[str, str] = {}
        for p in boxes[0].find_elements("css selector", "p") if boxes else []:
            key, _, value = (p.get_attribute("textContent") or "").partition(" ")
            found[key] = value
        return found if found.get("arch_id") == arch_id else None

    return attrs
