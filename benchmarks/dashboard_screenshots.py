"""Screenshots of `nas dashboard` for the README: a study's trials and its Pareto front.

Runs a search in a temporary directory (cnn-small on digits, naswot up, MACs down, a
MACs limit so that some candidates are infeasible), serves it with ``nas dashboard``
and photographs optuna-dashboard in headless Chromium (Debian's chromium and
chromedriver, as tests/nas/test_dashboard_browser.py drives them, with the same code):

- ``docs/images/dashboard_trials.png``: the trial list and one Pareto-optimal trial:
  its values, user attrs (arch_id, metrics, feasible) and artifacts (model.onnx,
  arch.json);
- ``docs/images/dashboard_pareto.png``: the Pareto-front plot (infeasible trials grey).

    python benchmarks/dashboard_screenshots.py                  # 30 trials, 1400x1000
    python benchmarks/dashboard_screenshots.py --trials 60 --max-macs 400000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "helpers"))

from dashboard_browser import (
    chromium,
    dashboard,
    missing_browser,
    pareto_traces,
    settle,
    wait_for,
)

import nas

IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"
#: Tall enough for a trial's page down to its artifacts.
TRIAL_PAGE_HEIGHT = 1350
#: plotly's toolbar sits over the colour bars' titles in a still picture.
HIDE_TOOLBARS = "document.querySelectorAll('.modebar-container').forEach(e => e.remove())"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--max-macs", type=float, default=600_000, help="the MACs limit")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=IMAGES)
    args = parser.parse_args()
    reason = missing_browser()
    if reason is not None:
        sys.exit(reason)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        storage = f"sqlite:///{Path(tmp) / 'nas.db'}"
        result = nas.search(
            {"trials": args.trials, "storage": storage, "constraints": {"macs": args.max_macs}}
        )
        front = nas.pareto(result.study)
        with dashboard(storage, "nas") as running, chromium(args.width, args.height) as driver:
            shoot_pareto(driver, running.url, args.out / "dashboard_pareto.png")
            first = min(row["trial"] for row in front)  # high in the list, so shown selected
            shoot_trial(driver, running.url, first, args.out / "dashboard_trials.png")
    print(f"{len(front)}-trial front of {args.trials}; screenshots in {args.out}")


def shoot_pareto(driver: Any, url: str, path: Path) -> None:
    """The Pareto Front card of the study page: selectors, plot and colour bars."""
    driver.get(url)
    wait_for(driver, pareto_traces, "the Pareto-front plot")
    card = driver.find_element(
        "xpath", "//*[@id='graph-pareto-front']/ancestor::div[contains(@class, 'MuiCard-root')]"
    )
    driver.execute_script(HIDE_TOOLBARS)
    settle()
    card.screenshot(str(path))


def shoot_trial(driver: Any, url: str, number: int, path: Path) -> None:
    """The trial list with trial ``number`` open: values, parameters, user attrs, artifacts.

    The window is made taller for it, so the trial's artifacts fit under its attrs.
    """
    width = driver.get_window_size()["width"]
    driver.set_window_size(width, TRIAL_PAGE_HEIGHT)
    driver.get(f"{url}/trials?numbers={number}")  # the list is virtual: no click far down
    wait_for(
        driver,
        lambda d: d.find_elements("css selector", "a[aria-label='download artifact']"),
        "the trial's artifacts",
    )
    settle()
    driver.save_screenshot(str(path))


if __name__ == "__main__":
    main()
