"""Measure the foundation's promise: `nas search` with no arguments, run as a user runs it.

Runs, in a fresh directory, as subprocesses (so import time counts):
1. `nas search`                 (the default study "nas" in ./nas.db)
2. `nas search`                 again: the study is continued with new trials
3. `nas search --study repeat`  a new study with the same seed: the same candidates

and records wall seconds, complete trials, evaluations run and reused. The
reuse ratio of run 3 against run 1's wall time is the payoff of the evaluation
cache. Results: benchmarks/results/foundation_search.{json,md}.

    python benchmarks/foundation_search.py
"""

from __future__ import annotations

import json
import platform
import re
import subprocess
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
SUMMARY = re.compile(
    r"(\d+) trials complete, (\d+) failed in ([\d.]+) s; evaluations: (\d+) run, (\d+) of (\d+)"
)


def run(args: list[str], cwd: Path) -> dict[str, float | str]:
    start = time.perf_counter()
    proc = subprocess.run(["nas", *args], cwd=cwd, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    match = SUMMARY.search(" ".join(proc.stderr.split()))
    if match is None:
        raise RuntimeError(f"no summary line in: {proc.stderr}")
    complete, failed, loop_s, ran, reused, total = match.groups()
    return {
        "command": "nas " + " ".join(args),
        "wall_s": round(wall, 2),
        "search_loop_s": float(loop_s),
        "complete": int(complete),
        "failed": int(failed),
        "evaluations_run": int(ran),
        "evaluations_reused": int(reused),
        "evaluations": int(total),
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        rows = [
            run(["search", "-q"], cwd),
            run(["search", "-q"], cwd),
            run(["search", "-q", "--study", "repeat"], cwd),
        ]
    RESULTS.mkdir(exist_ok=True)
    meta = {
        "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }
    (RESULTS / "foundation_search.json").write_text(
        json.dumps({"meta": meta, "runs": rows}, indent=2)
    )
    lines = [
        "# `nas search` with no arguments (cnn-small on digits, naswot vs MACs, TPE, 100 trials)",
        "",
        "| command | wall s | search loop s | complete | failed | evaluations run | reused |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| `{r['command']}` | {r['wall_s']} | {r['search_loop_s']} | {r['complete']} "
            f"| {r['failed']} | {r['evaluations_run']} "
            f"| {r['evaluations_reused']} of {r['evaluations']} |"
        )
    lines.append("")
    lines.append(
        f"Run 3 (same candidates, every evaluation reused) took {rows[2]['search_loop_s']} s of "
        f"search loop against {rows[0]['search_loop_s']} s for run 1."
    )
    (RESULTS / "foundation_search.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
