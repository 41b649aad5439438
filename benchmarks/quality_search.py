"""What does a 15-minute training search find? Runs the example configs as a user would.

For each of examples/digits-train.yaml and examples/mnist1d-train.yaml: runs
`nas search CONFIG` in a fresh directory (a subprocess, so start-up counts), then
reads the study back and records the best validation accuracy, when it was first
reached, and the trial counts by state. Results:
benchmarks/results/quality_search.{json,md}.

    python benchmarks/quality_search.py [--only digits-train]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
TARGETS = {"digits-train": 0.97, "mnist1d-train": 0.90}


def run(name: str) -> dict[str, object]:
    config = ROOT / "examples" / f"{name}.yaml"
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/nas.db"
        start = time.perf_counter()
        subprocess.run(["nas", "search", str(config), "-q", "--storage", url], check=True, cwd=tmp)
        wall = time.perf_counter() - start
        study = optuna.load_study(study_name=name, storage=url)
    trials = study.trials
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = study.best_trial
    t0 = min(t.datetime_start for t in trials if t.datetime_start)
    target = TARGETS[name]
    reached = [t for t in complete if t.value is not None and t.value >= target]
    first = min(reached, key=lambda t: t.datetime_complete) if reached else None
    return {
        "config": f"examples/{name}.yaml",
        "wall_minutes": round(wall / 60, 2),
        "trials": len(trials),
        "complete": len(complete),
        "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in trials),
        "failed": sum(t.state == optuna.trial.TrialState.FAIL for t in trials),
        "best_val_acc": best.value,
        "best_trial": best.number,
        "best_arch": best.user_attrs.get("arch"),
        "best_params": best.user_attrs.get("params"),
        "best_bytes": best.user_attrs.get("bytes"),
        "target": target,
        "minutes_to_target": (
            round((first.datetime_complete - t0).total_seconds() / 60, 2) if first else None
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=list(TARGETS))
    args = parser.parse_args()
    rows = [run(name) for name in args.only]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "quality_search.json").write_text(json.dumps(rows, indent=2, default=str))
    write_markdown(rows)


def write_markdown(rows: list[dict[str, object]]) -> None:
    lines = [
        "# Training searches within 15 minutes (2 CPU cores)",
        "",
        "`python benchmarks/quality_search.py` (runs `nas search examples/<config>.yaml`).",
        "",
        "| config | wall min | trials (complete / pruned / failed) | best val acc | target "
        "| min to target | best architecture | params | bytes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| `{r['config']}` | {r['wall_minutes']} | {r['trials']} ({r['complete']} / "
            f"{r['pruned']} / {r['failed']}) | {r['best_val_acc']:.4f} | {r['target']} "
            f"| {r['minutes_to_target']} | {str(r['best_arch']).replace('|', '/')} "
            f"| {r['best_params']} "
            f"| {r['best_bytes']} |"
        )
    lines += [
        "",
        "The best trial is chosen on the validation split, which is also what the search saw",
        "(MNIST-1D ships train/test only; its test part is our validation split), so the",
        "best value is an optimistic estimate. Stages are separated by `/` in the summaries.",
    ]
    (RESULTS / "quality_search.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
