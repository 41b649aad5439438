"""How far can each zero-cost proxy be trusted? Rank correlation with trained accuracy.

For each suite, N architectures are sampled from a built-in space; each is
scored by every registered proxy (timed) and trained with a fixed budget (QAT at
its bits); then Spearman's rho and Kendall's tau of every proxy, of the rank
ensemble and of params/MACs against the trained validation accuracy are
reported, with the seconds each proxy takes per architecture (one thread).

Suites:
- ``mlp``: the *same* N architectures of ``mlp-small`` (the same sampled
  parameters) trained on ``digits`` (64 features) and on ``mnist1d`` (40);
- ``cnn-digits``: ``cnn-small`` on ``digits``;
- ``cnn1d-mnist1d``: ``cnn1d-small`` on ``mnist1d``.

Results: benchmarks/results/proxy_quality.csv (one row per architecture and
data set) and proxy_quality.md.

    python benchmarks/proxy_quality.py                # N = 60, two worker processes
    python benchmarks/proxy_quality.py --n 8 --quick  # a smoke run
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from scipy import stats

from nas.evaluators._ensemble import DEFAULT_PROXIES

RESULTS = Path(__file__).parent / "results"
PROXIES = ("synflow", "naswot", "grad_norm", "snip", "grasp", "fisher", "jacob_cov", "zen", "zico")
BASELINES = ("params", "macs")


@dataclass(frozen=True)
class Suite:
    name: str
    space: str
    datasets: tuple[str, ...]
    train: dict[str, Any]


SUITES = (
    Suite("mlp", "mlp-small", ("digits", "mnist1d"), {"epochs": 10, "lr": 3e-3}),
    Suite("cnn-digits", "cnn-small", ("digits",), {"epochs": 10, "lr": 3e-3}),
    Suite("cnn1d-mnist1d", "cnn1d-small", ("mnist1d",), {"epochs": 4, "lr": 3e-3}),
)


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _params(suite: Suite, n: int, seed: int) -> list[dict[str, Any]]:
    """The sampled parameters: the same N points for every data set of the suite."""
    from nas.evaluators import load_dataset
    from nas.search_space import RandomTrial, get_space

    data = load_dataset(suite.datasets[0])
    space = get_space(suite.space).for_data(data.input_shape, data.num_classes)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        trial = RandomTrial(rng)
        space.sample(trial)
        out.append(trial.params)
    return out


def _measure(task: tuple[Suite, str, dict[str, Any], bool]) -> dict[str, Any]:
    from nas.evaluators import EvalContext, get_evaluator, load_dataset
    from nas.search_space import get_space

    suite, dataset, params, quick = task
    data = load_dataset(dataset)
    space = get_space(suite.space).for_data(data.input_shape, data.num_classes)
    arch = space.sample(optuna.trial.FixedTrial(params))
    ctx = EvalContext(data, seed=0)
    row: dict[str, Any] = {"suite": suite.name, "dataset": dataset, "arch_id": arch.arch_id}
    row.update(arch.cost().as_dict())
    for name in PROXIES + BASELINES:
        start = time.perf_counter()
        try:
            row[name] = get_evaluator(name)(arch, ctx)[name]
        except Exception as exc:  # a proxy that cannot score this candidate: recorded
            row[name] = math.nan
            row[f"{name}_error"] = str(exc).splitlines()[0]
        row[f"{name}_s"] = time.perf_counter() - start
    train = dict(suite.train, epochs=1) if quick else suite.train
    result = get_evaluator("train", **train)(arch, ctx)
    row.update(val_acc=result["val_acc"], train_seconds=result["train_seconds"])
    row["arch"] = arch.summary()
    return row


def _correlations(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from nas.evaluators import rank_ensemble

    acc = np.array([r["val_acc"] for r in rows])
    ensemble = rank_ensemble([{p: r[p] for p in PROXIES} for r in rows], ENSEMBLE)
    columns = {**{p: [r[p] for r in rows] for p in PROXIES + BASELINES}, "ensemble": ensemble}
    out = []
    for name, values in columns.items():
        x = np.array(values, dtype=float)
        ok = ~np.isnan(x)
        rho = stats.spearmanr(x[ok], acc[ok]).statistic if ok.sum() > 2 else math.nan
        tau = stats.kendalltau(x[ok], acc[ok]).statistic if ok.sum() > 2 else math.nan
        parts = ENSEMBLE if name == "ensemble" else (name,)  # an ensemble costs its parts
        seconds = float(np.mean([sum(r[f"{p}_s"] for p in parts) for r in rows]))
        out.append(
            {
                "score": name,
                "spearman": rho,
                "kendall": tau,
                "s_per_arch": seconds,
                "scored": int(ok.sum()),
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=60, help="architectures per suite")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="train 1 epoch (smoke test)")
    parser.add_argument("--suites", nargs="*", default=[s.name for s in SUITES])
    args = parser.parse_args()
    suites = [s for s in SUITES if s.name in args.suites]
    tasks = [
        (suite, dataset, params, args.quick)
        for suite in suites
        for params in _params(suite, args.n, args.seed)
        for dataset in suite.datasets
    ]
    start = time.perf_counter()
    with ProcessPoolExecutor(args.workers, initializer=_init_worker) as pool:
        rows = list(pool.map(_measure, tasks))
    wall = time.perf_counter() - start
    _write(rows, suites, args, wall)


def _write(rows: list[dict[str, Any]], suites: list[Suite], args: Any, wall: float) -> None:
    RESULTS.mkdir(exist_ok=True)
    fields = sorted({k for r in rows for k in r}, key=lambda k: (k != "suite", k))
    with open(RESULTS / "proxy_quality.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        f"# Proxy quality: rank correlation with trained accuracy (N = {args.n} per suite)",
        "",
        f"`python benchmarks/proxy_quality.py --n {args.n}`"
        + (" --quick (1 training epoch)" if args.quick else "")
        + f"; {wall / 60:.1f} min wall with {args.workers} worker processes of one thread.",
        f"Ensemble = mean normalized rank over {', '.join(ENSEMBLE)}.",
        "",
    ]
    for suite in suites:
        for dataset in suite.datasets:
            subset = [r for r in rows if r["suite"] == suite.name and r["dataset"] == dataset]
            lines += _table(suite, dataset, subset)
    (RESULTS / "proxy_quality.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _table(suite: Suite, dataset: str, rows: list[dict[str, Any]]) -> list[str]:
    acc = [r["val_acc"] for r in rows]
    corr = _correlations(rows)
    best_single = max(
        (c for c in corr if c["score"] in (*PROXIES, "params")), key=lambda c: c["spearman"]
    )
    ens = next(c for c in corr if c["score"] == "ensemble")
    verdict = "beats" if ens["spearman"] > best_single["spearman"] else "does not beat"
    lines = [
        f"## {suite.space} on {dataset} (train: {suite.train})",
        "",
        f"Trained accuracy: min {min(acc):.3f}, median {float(np.median(acc)):.3f}, "
        f"max {max(acc):.3f}.",
        "",
        "| score | Spearman rho | Kendall tau | s / arch | scored |",
        "|---|---|---|---|---|",
    ]
    for c in sorted(corr, key=lambda c: -np.nan_to_num(c["spearman"], nan=-9)):
        lines.append(
            f"| {c['score']} | {c['spearman']:.3f} | {c['kendall']:.3f} "
            f"| {c['s_per_arch']:.3f} | {c['scored']}/{len(rows)} |"
        )
    lines += [
        "",
        f"The ensemble (rho {ens['spearman']:.3f}) {verdict} the best single score "
        f"({best_single['score']}, rho {best_single['spearman']:.3f}).",
        "",
    ]
    return lines


ENSEMBLE: tuple[str, ...] = DEFAULT_PROXIES

if __name__ == "__main__":
    main()
