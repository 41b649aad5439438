"""Evaluations per minute with 1, 2, 4, 8 workers: local vs process vs Ray (issue #6, item 6).

Each cell is one ``nas.search`` on a fresh SQLite file (nothing reused), the same
random-sampler seed (the same architectures in every cell), cnn-small on digits:

- ``proxy``: the ``naswot`` zero-cost proxy (tens of milliseconds per candidate, so the
  driver's own work per trial -- ask, store, tell -- shows);
- ``train``: the ``train`` evaluator, 1 epoch (about a second per candidate on 2 cores).

Backends: ``local`` (the driver's process; one worker only), ``process`` (a spawned
pool; torch threads per worker: the cores shared out, at least 1) and ``ray`` (one
actor per worker on a Ray cluster started once for the run with this machine's cores;
``cpus_per_trial`` = cores / workers, so every actor is scheduled; on a GPU,
``gpus_per_trial`` = GPUs / workers).

Every cell runs once per round (3 rounds), the cells in a new order each round, and
the tables give the median: this shared machine's speed drifts by tens of percent
within minutes. Reported per cell: evaluations per minute over the whole search
(worker start-up included) and in steady state (from the ``workers``-th completion to
the ``workers``-th from last: start-up over, no worker idle yet), speedup over
``local`` with one worker (steady state), and parallel efficiency = speedup / workers
(and / min(workers, cores): what the cores allow). Results:
``benchmarks/results/scaling.{json,md,png}``.

    python benchmarks/scaling.py                      # both evaluators, 1/2/4/8 workers
    python benchmarks/scaling.py --device cuda        # on a GPU machine (Ray: GPUs shared out)
    python benchmarks/scaling.py --workers 1 2 --proxy-trials 40 --train-trials 8 --rounds 1
    python benchmarks/scaling.py --from-json benchmarks/results/scaling.json   # pages only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import nas
from nas.workers import TrialOutcome

RESULTS = Path(__file__).parent / "results"
#: What a run measures (the tables give each one's median over the rounds).
MEASURED = ("wall_s", "per_min", "steady_per_min", "first_done_s")
COMMAND = "python benchmarks/scaling.py"
EVALUATORS: dict[str, tuple[Any, str]] = {
    "proxy": ("naswot", "maximize:naswot"),
    "train": ({"name": "train", "settings": {"epochs": 1}}, "maximize:val_acc"),
}


def cell(
    kind: str, backend: str, workers: int, trials: int, device: str, gpus: int
) -> dict[str, Any]:
    """One search; its throughput, whole and steady."""
    evaluator, objective = EVALUATORS[kind]
    cores = os.cpu_count() or 1
    config: dict[str, Any] = {
        "trials": trials,
        "seed": 0,
        "sampler": "random",
        "evaluators": [evaluator],
        "objectives": [objective],
        "device": device,
        "parallel": workers,
        "backend": backend,
    }
    if backend == "ray":
        config["cpus_per_trial"] = cores / workers
        config["gpus_per_trial"] = gpus / workers if device == "cuda" else 0.0
    finished: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        config["storage"] = f"sqlite:///{tmp}/scaling.db"
        start = time.perf_counter()

        def record(outcome: TrialOutcome) -> None:
            finished.append(time.perf_counter() - start)

        result = nas.search(config, callbacks=[record])
        wall = time.perf_counter() - start
    s = result.summary
    if s.failed or s.evaluations_run != trials:
        raise RuntimeError(
            f"{kind}/{backend}/{workers}: {s.failed} failed, {s.evaluations_run} run"
        )
    steady = steady_rate(finished, workers)
    return {
        "evaluator": kind,
        "backend": backend,
        "workers": workers,
        "trials": trials,
        "wall_s": round(wall, 2),
        "per_min": round(60 * trials / wall, 1),
        "steady_per_min": round(60 * steady, 1),
        "first_done_s": round(finished[0], 2),
    }


def steady_rate(finished: list[float], workers: int) -> float:
    """Completions per second while every worker is busy.

    From the ``workers``-th completion (all started, start-up over) to the
    ``workers``-th from last (before the last ones drain with workers idle).
    """
    first, last = workers - 1, len(finished) - workers
    if last - first < workers:
        raise ValueError(f"too few trials ({len(finished)}) for {workers} workers")
    return (last - first) / (finished[last] - finished[first])


def medians(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per cell: the median of its rounds, and the range of its steady rate."""
    rows = []
    keys = dict.fromkeys((r["evaluator"], r["backend"], r["workers"]) for r in runs)
    for key in keys:
        mine = [r for r in runs if (r["evaluator"], r["backend"], r["workers"]) == key]
        steady = [r["steady_per_min"] for r in mine]
        rows.append(
            {
                "evaluator": key[0],
                "backend": key[1],
                "workers": key[2],
                "trials": mine[0]["trials"],
                "rounds": len(mine),
                **{k: statistics.median(r[k] for r in mine) for k in MEASURED},
                "steady_min": min(steady),
                "steady_max": max(steady),
            }
        )
    order = {"local": 0, "process": 1, "ray": 2}
    return sorted(rows, key=lambda r: (r["evaluator"], order.get(r["backend"], 3), r["workers"]))


def add_ratios(rows: list[dict[str, Any]], cores: int) -> None:
    """Speedup over local with one worker, and parallel efficiency (medians, steady state)."""
    for kind in {r["evaluator"] for r in rows}:
        base = next(r for r in rows if r["evaluator"] == kind and r["backend"] == "local")
        for r in (r for r in rows if r["evaluator"] == kind):
            speedup = r["steady_per_min"] / base["steady_per_min"]
            r["speedup"] = round(speedup, 2)
            r["efficiency"] = round(speedup / r["workers"], 2)
            r["efficiency_cores"] = round(speedup / min(r["workers"], cores), 2)


def write(
    rows: list[dict[str, Any]], runs: list[dict[str, Any]], meta: dict[str, Any], name: str
) -> None:
    RESULTS.mkdir(exist_ok=True)
    doc = {"meta": meta, "rows": rows, "runs": runs}
    (RESULTS / f"{name}.json").write_text(json.dumps(doc, indent=2))
    lines = [
        f"# Scaling: evaluations per minute by backend and workers ({meta['device']})",
        "",
        f"Machine: {meta['machine']}, {meta['cores']} cores"
        + (f", {meta['gpus']} GPU(s)" if meta["gpus"] else "")
        + f"; Python {meta['python']}, torch {meta['torch']}, Ray {meta['ray']}. "
        f"Command: `{meta['command']}`.",
        "",
        "cnn-small on digits, random sampler (the same architectures in every cell), a fresh "
        f"database per run (nothing reused). Every cell ran {meta['rounds']} times, once per "
        "round, the cells in a new order each round; the table gives medians, and the range of "
        "the steady rate (this shared machine's speed drifts by tens of percent within "
        "minutes). *Whole*: trials / wall time of the search, worker "
        "start-up included. *Steady*: from the `workers`-th completion to the "
        "`workers`-th from last (every worker busy). Speedup: steady "
        "rate over `local` with 1 worker. Efficiency: speedup / workers; "
        "*per core*: speedup / "
        f"min(workers, {meta['cores']} cores).",
        "",
    ]
    for kind in EVALUATORS:
        kind_rows = [r for r in rows if r["evaluator"] == kind]
        if not kind_rows:
            continue
        what = "naswot proxy" if kind == "proxy" else "train, 1 epoch"
        lines += [
            f"## {kind} ({what}, {kind_rows[0]['trials']} trials per cell)",
            "",
            "| backend | workers | whole /min | steady /min | steady range | speedup "
            "| efficiency | per core | wall s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in kind_rows:
            lines.append(
                f"| {r['backend']} | {r['workers']} | {r['per_min']:.0f} "
                f"| {r['steady_per_min']:.0f} | {r['steady_min']:.0f}–{r['steady_max']:.0f} "
                f"| {r['speedup']:.2f} | {r['efficiency']:.2f} | {r['efficiency_cores']:.2f} "
                f"| {r['wall_s']:.1f} |"
            )
        lines.append("")
    (RESULTS / f"{name}.md").write_text("\n".join(lines))
    plot(rows, meta, RESULTS / f"{name}.png")


def plot(rows: list[dict[str, Any]], meta: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [k for k in EVALUATORS if any(r["evaluator"] == k for r in rows)]
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.5 * len(kinds), 4), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        for backend, marker in (("local", "s"), ("process", "o"), ("ray", "^")):
            pts = [r for r in rows if r["evaluator"] == kind and r["backend"] == backend]
            xs, ys = [r["workers"] for r in pts], [r["steady_per_min"] for r in pts]
            if pts:
                ax.plot(xs, ys, marker=marker, label=backend, linestyle="-" if xs[1:] else "")
        ax.set_ylim(bottom=0)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("workers")
        ax.set_ylabel("evaluations / minute (steady)")
        ax.set_title(f"{kind} on {meta['cores']} cores ({meta['device']})")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--backends", nargs="+", default=["local", "process", "ray"])
    parser.add_argument("--evaluators", nargs="+", default=list(EVALUATORS))
    parser.add_argument("--proxy-trials", type=int, default=160)
    parser.add_argument("--train-trials", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--name", default=None, help="results file name (default scaling[_cuda])")
    parser.add_argument("--from-json", type=Path, help="only rewrite the .md and .png of a result")
    args = parser.parse_args()
    if args.from_json is not None:
        doc = json.loads(args.from_json.read_text())
        write(doc["rows"], doc["runs"], doc["meta"], args.from_json.stem)
        return

    import ray
    import torch

    cores = os.cpu_count() or 1
    gpus = torch.cuda.device_count() if args.device == "cuda" else 0
    if "ray" in args.backends:  # one cluster for every Ray cell: its start is not a cell's
        ray.init(num_cpus=cores, num_gpus=gpus, include_dashboard=False, log_to_driver=False)
    runs = []
    trials = {"proxy": args.proxy_trials, "train": args.train_trials}
    cells = [
        (kind, backend, workers)
        for kind in args.evaluators
        for backend in args.backends
        for workers in ([1] if backend == "local" else args.workers)
    ]
    # A shared machine's speed drifts by tens of percent within minutes: every cell runs
    # once per round, in a new order each round, and the tables give the median.
    for round_ in range(args.rounds):
        for kind, backend, workers in random.Random(round_).sample(cells, len(cells)):
            row = cell(kind, backend, workers, trials[kind], args.device, gpus)
            row["round"] = round_
            print(json.dumps(row), flush=True)
            runs.append(row)
    rows = medians(runs)
    add_ratios(rows, cores)
    meta = {
        "machine": platform.processor() or platform.machine(),
        "cores": cores,
        "gpus": gpus,
        "device": args.device,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ray": ray.__version__,
        "command": COMMAND + (f" --device {args.device}" if args.device != "cpu" else ""),
    }
    meta["rounds"] = args.rounds
    write(rows, runs, meta, args.name or ("scaling" if args.device == "cpu" else "scaling_cuda"))


if __name__ == "__main__":
    main()
