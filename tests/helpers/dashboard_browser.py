"""`nas dashboard` in a subprocess and headless Chromium driven by Selenium.

Shared by tests/nas/test_dashboard_browser.py and benchmarks/dashboard_screenshots.py.
Debian's chromium and chromedriver only: the driver's path is given, so Selenium
Manager never runs (it would download a browser).
"""

from __future__ import annotations

import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
#: The longest any one wait lasts, in seconds.
WAIT = 30.0

T = TypeVar("T")


def missing_browser() -> str | None:
    """Why the browser cannot run here (a sentence), or None when it can."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if not missing:
        return None
    return (
        f"{' and '.join(missing)} missing: apt-get install chromium chromium-driver (.ci/run does)"
    )


@dataclass
class Dashboard:
    """A running ``nas dashboard``: the URL it printed, its process and its stderr."""

    url: str
    proc: subprocess.Popen[str]
    log: IO[str]

    def stderr(self) -> str:
        """What it has written to standard error so far."""
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> int:
        """Ctrl-C (SIGINT), as a person would; killed if not gone in :data:`WAIT` s.

        Returns its exit status (negative: killed by that signal).
        """
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@contextmanager
def dashboard(storage: str, study: str | None = None) -> Iterator[Dashboard]:
    """``nas dashboard [STUDY] --storage URL --port 0 -q`` running, stopped at the end.

    Ready once it has printed its URL (the first line of its standard output),
    within :data:`WAIT` seconds.
    """
    command = [sys.executable, "-m", "nas.cli", "dashboard", *([study] if study else [])]
    command += ["--storage", storage, "--port", "0", "-q"]
    with tempfile.TemporaryFile("w+") as log:  # a file: a full pipe would block the server
        # A shell's background job ignores SIGINT, and a child would inherit that.
        proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        running = Dashboard("", proc, log)
        try:
            running.url = _first_line(running)
            yield running
        finally:
            running.stop()
            if proc.stdout is not None:
                proc.stdout.close()


def _first_line(running: Dashboard) -> str:
    stdout = running.proc.stdout
    assert stdout is not None
    ready, _, _ = select.select([stdout], [], [], WAIT)
    line = stdout.readline().strip() if ready else ""
    if not line.startswith("http://"):
        running.stop()
        raise RuntimeError(
            f"nas dashboard printed no URL within {WAIT:g} s: {line!r}; {running.stderr()}"
        )
    return line


@contextmanager
def chromium(width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """Headless Chromium under Debian's chromedriver; quit at the end."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-extensions",
        "--no-first-run",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        driver.set_page_load_timeout(WAIT)
        yield driver
    finally:
        driver.quit()


def wait_for(driver: Any, condition: Callable[[Any], T | None], what: str) -> T:
    """``condition(driver)`` once it is truthy, within :data:`WAIT` seconds; else a
    TimeoutException that says ``what`` was awaited (and on which page)."""
    from selenium.webdriver.support.ui import WebDriverWait

    message = f"waited {WAIT:g} s for {what} on {driver.current_url}"
    value = WebDriverWait(driver, WAIT, poll_frequency=0.2).until(condition, message)
    assert value is not None  # until() returns a truthy value or raises
    return value


#: The traces of optuna-dashboard's Pareto-front plot (plotly.js), by their hover label.
PARETO_TRACES_JS = """
const plot = document.getElementById('graph-pareto-front');
if (!plot || !plot.data || plot.data.length === 0) return null;
return plot.data.map(t => ({
    label: (t.hovertemplate || '').replace(/^.*<extra>(.*)<\\/extra>$/, '$1'),
    x: Array.from(t.x || []), y: Array.from(t.y || []),
}));
"""


def pareto_traces(driver: Any) -> dict[str, list[tuple[float, float]]] | None:
    """The Pareto-front plot's points by trace (``Best Trial``: the front;
    ``Infeasible Trial``; ``Trial``/``Feasible Trial``: the rest), once drawn."""
    traces = driver.execute_script(PARETO_TRACES_JS)
    if not traces:
        return None
    points: dict[str, list[tuple[float, float]]] = {}
    for t in traces:
        points.setdefault(t["label"], []).extend(zip(t["x"], t["y"], strict=True))
    return points


def trial_item(number: int) -> tuple[str, str]:
    """The trial list's entry for trial ``number`` (a locator)."""
    return ("xpath", f"//li//span[normalize-space()='Trial {number}']")


def settle(seconds: float = 0.5) -> None:
    """Let plotly finish an animation before a screenshot."""
    time.sleep(seconds)
