"""A Ray cluster started by hand: two nodes on this machine, token authentication, jobs.

What a user does (README, "A Ray cluster"): make a token, ``ray start --head``, a
second ``ray start --address``, then run ``nas search --backend ray`` against it
or submit it with ``ray job submit``. The cluster runs in a HOME of its own (its
own ``~/.ray/auth_token``) and a temp dir of its own, on free ports, so that it
neither sees nor stops the test session's private cluster; it is stopped with
SIGTERM (``ray stop`` would stop every Ray on the machine).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from crash_evaluators import attempts, nodes
from optuna.trial import TrialState

import nas

pytestmark = [pytest.mark.ray, pytest.mark.slow]

HELPERS = Path(__file__).parents[1] / "helpers"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ray_cli() -> str:
    beside = Path(sys.executable).with_name("ray")
    found = str(beside) if beside.exists() else shutil.which("ray")
    if found is None:
        pytest.skip("the ray command is not installed")
    return found


@dataclass
class Cluster:
    address: str
    dashboard: str
    client: str
    home: Path
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
        """A command as a user on this machine runs it (this cluster's HOME)."""
        return subprocess.run(
            args, env={**self.env, **env}, capture_output=True, text=True, timeout=timeout
        )


def _node_count(cluster: Cluster, ray: str) -> int:
    done = cluster.run(
        ray, "status", "--address", cluster.address, timeout=60, RAY_AUTH_MODE="token"
    )
    active = done.stdout.split("Active:")[-1].split("Pending:")[0]
    return active.count("node_") if done.returncode == 0 else 0


def _start_node(ray: str, env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[str]:
    with log.open("w") as out:
        return subprocess.Popen(
            [ray, "start", "--block", "--num-cpus", "1", "--node-ip-address", "127.0.0.1",
             "--dashboard-agent-listen-port", str(_free_port()),
             "--metrics-export-port", str(_free_port()), "--disable-usage-stats", *args],
            env=env, stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip


def _alive(process: subprocess.Popen[str], log: Path, deadline: float) -> None:
    tail = log.read_text()[-3000:] if log.exists() else ""
    assert process.poll() is None, f"ray start exited:\n{tail}"
    assert time.monotonic() < deadline, f"ray start did not come up in time:\n{tail}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """``ray start --head`` and a second ``ray start --address``, with a token."""
    ray = _ray_cli()
    root = tmp_path_factory.mktemp("ray-cluster")
    home = root / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    path = os.pathsep.join([str(HELPERS), *sys.path])
    env.update(HOME=str(home), PYTHONPATH=path, RAY_USAGE_STATS_ENABLED="0")
    # `nas` and `ray` as this interpreter installed them, first on the PATH (jobs run `nas`).
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] = "0"  # nothing to drain at teardown
    # Ray's Unix sockets live under the temp dir, whose path must stay short (107 bytes).
    temp = Path(tempfile.mkdtemp(prefix="nas-ray-"))
    port, dashboard, client = _free_port(), _free_port(), _free_port()
    cluster = Cluster(
        f"127.0.0.1:{port}", f"http://127.0.0.1:{dashboard}", f"ray://127.0.0.1:{client}", home, env
    )
    token = cluster.run(ray, "get-auth-token", "--generate", timeout=60)
    assert token.returncode == 0, token.stderr
    assert (home / ".ray" / "auth_token").is_file()
    logs = [root / "head.log", root / "node.log"]
    head = ["--head", "--port", str(port), "--temp-dir", str(temp), "--dashboard-host", "127.0.0.1"]
    head += ["--dashboard-port", str(dashboard), "--ray-client-server-port", str(client)]
    started = [_start_node(ray, env, logs[0], *head)]
    try:
        deadline = time.monotonic() + 180
        while _node_count(cluster, ray) < 1:
            _alive(started[0], logs[0], deadline)
            time.sleep(1)
        # A node joining an explicit address sends the token only in token mode.
        token_mode = {**env, "RAY_AUTH_MODE": "token"}
        started.append(_start_node(ray, token_mode, logs[1], "--address", cluster.address))
        while _node_count(cluster, ray) < 2:
            _alive(started[1], logs[1], deadline)
            time.sleep(1)
        yield cluster
    finally:
        for process in reversed(started):  # the second node first, then the head
            _stop(process)
        shutil.rmtree(temp, ignore_errors=True)


def _stop(process: subprocess.Popen[str]) -> None:
    """SIGTERM: ``ray start --block`` stops the node's processes (draining them first)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


_DRIVER = """
import sys
from crash_evaluators import registered
import nas
config = eval(sys.argv[1])
with registered():
    result = nas.search(config)
print(result.summary.complete, result.summary.failed)
"""


@pytest.mark.parametrize("via", ["gcs", "client"])
def test_a_search_spreads_its_actors_over_both_nodes(
    cluster: Cluster, tmp_path: Path, via: str
) -> None:
    log, db = tmp_path / "calls.log", f"sqlite:///{tmp_path / 'nas.db'}"
    config = {
        "trials": 6,
        "sampler": "random",
        "storage": db,
        "evaluators": [{"name": "test-misbehaves", "settings": {"log": str(log), "seconds": 0.5}}],
        "objectives": ["maximize:score"],
        "parallel": 2,
        "backend": "ray",
        # Explicit addresses (host:port, or Ray Client's ray://): nas turns token mode on.
        "ray_address": cluster.address if via == "gcs" else cluster.client,
        "cpus_per_trial": 1,
    }
    done = cluster.run(sys.executable, "-c", textwrap.dedent(_DRIVER), repr(config))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-2:] == ["6", "0"]
    # One CPU per node and one per actor: the two actors can only run on two nodes.
    assert len(nodes(log) - {"-"}) == 2
    assert len({pid for p in attempts(log).values() for pid in p}) == 2


def test_ray_job_submit_runs_nas_search_on_the_cluster(cluster: Cluster, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'nas.db'}"
    search = ["nas", "search", "-n", "4", "--parallel", "2", "--backend", "ray", "-q"]
    search += ["--storage", db]
    done = cluster.run(
        _ray_cli(), "job", "submit", "--address", cluster.dashboard, "--", *search,
        RAY_AUTH_MODE="token",
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "succeeded" in done.stdout + done.stderr
    assert "Connecting to existing Ray cluster" in done.stdout + done.stderr  # RAY_ADDRESS
    trials = nas.load_study("nas", db).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4


def test_a_driver_without_the_token_is_refused_in_one_line(
    cluster: Cluster, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "home"  # another user's HOME: no ~/.ray/auth_token
    elsewhere.mkdir()
    db = tmp_path / "nas.db"
    args = ["search", "-n", "2", "--backend", "ray", "--ray-address", cluster.address]
    done = cluster.run(
        sys.executable, "-m", "nas.cli", *args, "--storage", f"sqlite:///{db}", "-q",
        HOME=str(elsewhere),
    )  # fmt: skip
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith(f"error: ray_address: cannot connect to Ray at {cluster.address}")
    assert "RAY_AUTH_TOKEN" in errors[0]
    with pytest.raises(nas.NasError, match="no study"):  # the database holds no study
        nas.load_study("nas", f"sqlite:///{db}")
