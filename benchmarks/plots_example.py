"""Screenshots of the Pareto plot and the report (issue #7, items 2 and 4).

A short search: the default one (cnn-small on scikit-learn's digits, naswot against
MACs, multivariate TPE, seed 0), 40 trials, with a MACs limit of 400k, in a fresh
database in a temporary directory. The PNG goes to
``benchmarks/results/pareto_example.png``; the interactive HTML plot and the
``nas report`` page (each about 5 MB: plotly.js is inlined) stay in the temporary
directory, whose paths are printed.

    python benchmarks/plots_example.py                 # about 20 s on two cores
    python benchmarks/plots_example.py --trials 10     # a smoke run
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import nas
from nas._plots import write_pareto_plot
from nas._report import write_report

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--max-macs", type=float, default=400_000.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "pareto_example.png")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="nas-plots-"))  # kept: the HTML pages are in it
    url = f"sqlite:///{tmp / 'nas.db'}"
    result = nas.search(
        {"trials": args.trials, "storage": url, "constraints": {"macs": args.max_macs}}
    )
    study = result.study
    print(f"{result.summary.complete} trials, {len(nas.pareto(study))} on the front; {url}")
    print("wrote", write_pareto_plot(study, args.out))
    print("wrote", write_pareto_plot(study, tmp / "pareto_example.html"))
    print("wrote", write_report(study, tmp / "report.html"))


if __name__ == "__main__":
    main()
