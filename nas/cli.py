"""The ``nas`` command line (Typer + rich).

Every error a user can cause is printed as one line, ``error: <field>: <what is
allowed>``, with exit status 2 and no traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from nas._errors import ConfigError, NasError
from nas._render import Format, emit

app = typer.Typer(
    help="Hardware-aware neural architecture search.\n\nExample: nas search && nas pareto nas",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True)

StorageOpt = Annotated[
    str, typer.Option("--storage", help="Database URL (SQLAlchemy), e.g. sqlite:///nas.db.")
]
ArtifactsOpt = Annotated[
    str | None,
    typer.Option(
        metavar="DIR|none",
        help="Where trials upload arch.json, model.onnx, weights (Optuna artifacts); "
        "default: the study's, else nas-artifacts/ beside the SQLite file.",
    ),
]
FormatOpt = Annotated[
    Format, typer.Option("--format", "-f", help="table for people, json for scripts.")
]
ReferenceOpt = Annotated[
    str | None,
    typer.Option(
        metavar="V1,V2,...",
        help="A reference point, one value per objective: also give the front's hypervolume.",
    ),
]


# Numbers are parsed by _whole/_real, not by Typer, so that a bad one is a one-line error.
ParallelOpt = Annotated[
    str | None, typer.Option(metavar="<int>", help="Evaluations in flight at once (default 1).")
]
BackendOpt = Annotated[
    str | None,
    typer.Option(help="local | process | ray (default: local, process with --parallel > 1)."),
]
MaxRetriesOpt = Annotated[
    str | None,
    typer.Option(metavar="<int>", help="Runs again of an evaluation whose worker died (2)."),
]
CpusOpt = Annotated[
    str | None,
    typer.Option(metavar="<float>", help="CPU threads (process) or Ray CPUs per evaluation."),
]
GpusOpt = Annotated[
    str | None,
    typer.Option(metavar="<float>", help="GPUs per evaluation on Ray; 0.25 puts 4 on a GPU."),
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option(help="Ray cluster: auto (ray start here), ray://host:10001; default: new."),
]


@app.command(epilog="Example: nas search examples/search.yaml --trials 100 --sampler nsga2")
def search(
    config: Annotated[
        Path | None, typer.Argument(help="Search config (YAML/JSON); flags override it.")
    ] = None,
    space: Annotated[
        str | None, typer.Option(help="Built-in space name or a YAML/JSON file.")
    ] = None,
    dataset: Annotated[str | None, typer.Option(help="Data set name (see `nas datasets`).")] = None,
    evaluator: Annotated[
        list[str] | None,
        typer.Option(
            "--evaluator", "-e", help="Evaluator name, repeatable (see `nas evaluators`)."
        ),
    ] = None,
    objective: Annotated[
        list[str] | None,
        typer.Option(
            "--objective",
            "-o",
            help="[maximize:|minimize:]METRIC, repeatable; e.g. -o maximize:naswot -o bytes.",
        ),
    ] = None,
    sampler: Annotated[
        str | None,
        typer.Option(help="random | tpe | nsga2 | nsga3 | gp | evolution (`nas samplers`)."),
    ] = None,
    pruner: Annotated[
        str | None,
        typer.Option(help="none | median | sha | hyperband: stop weak trainings early."),
    ] = None,
    trials: Annotated[int | None, typer.Option("--trials", "-n", help="Trials to run.")] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Stop asking after this many seconds.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Sampler seed.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu | cuda | auto.")] = None,
    storage: Annotated[
        str | None, typer.Option(help="Database URL; default sqlite:///nas.db.")
    ] = None,
    study: Annotated[
        str | None, typer.Option(help="Study name; an existing one is continued.")
    ] = None,
    # Numbers are parsed here, not by Typer, so that a bad one is a one-line error too.
    max_latency_ms: Annotated[
        str | None,
        typer.Option(
            metavar="<float>",
            help="Constraint: latency_ms <= this (needs an evaluator that measures it).",
        ),
    ] = None,
    max_bytes: Annotated[
        str | None,
        typer.Option(metavar="<float>", help="Constraint: bytes (weights at their bits) <= this."),
    ] = None,
    max_bitops: Annotated[
        str | None, typer.Option(metavar="<float>", help="Constraint: bitops <= this.")
    ] = None,
    constraint: Annotated[
        list[str] | None,
        typer.Option(
            "--constraint",
            "-c",
            help="METRIC<=VALUE, repeatable; any metric, e.g. -c params<=50000.",
        ),
    ] = None,
    warmup: Annotated[
        str | None,
        typer.Option(
            metavar="<int>",
            help="Zero-cost warm-up of a new study: score N random candidates first.",
        ),
    ] = None,
    warmup_proxy: Annotated[
        str | None,
        typer.Option(help="Warm-up score: a proxy with one metric to maximize, or ensemble."),
    ] = None,
    warmup_top: Annotated[
        str | None,
        typer.Option(
            metavar="<int>",
            help="Warm-up candidates enqueued as first trials (min(N, 10, trials)).",
        ),
    ] = None,
    parallel: ParallelOpt = None,
    backend: BackendOpt = None,
    max_retries: MaxRetriesOpt = None,
    cpus_per_trial: CpusOpt = None,
    gpus_per_trial: GpusOpt = None,
    ray_address: RayAddressOpt = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue a stopped search to its --trials in all (not --trials more).",
        ),
    ] = False,
    artifacts: ArtifactsOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Search a space for architectures that are good and cheap.

    With no arguments: the built-in space cnn-small on scikit-learn's digits,
    scored by the naswot proxy against MACs, stored in ./nas.db as study "nas".

    Constraints (--max-bytes, --max-bitops, --max-latency-ms, --constraint) add to
    the config's: a candidate over a limit is kept, marked infeasible, steered
    away from by the sampler and never shown on the Pareto front.

    Warm-up (--warmup N): before its first trial, a new study scores N random
    candidates with --warmup-proxy (synflow) and runs the best --warmup-top
    (min(N, 10, trials)) as its first trials; they count toward --trials.

    Parallel (--parallel K): K evaluations in flight, in a local process pool or on
    Ray (--backend ray). A worker that dies is replaced and its evaluation retried
    (--max-retries); a candidate that raises or runs out of memory fails at once.

    Crash safety: every trial in flight has a heartbeat. Re-running on the same
    study fails the trials a stopped driver left running and runs them again first;
    --resume also counts --trials in all, so the same command resumes a killed
    search where it would have ended. Nothing already evaluated is evaluated again.
    """
    import nas

    limits = _limits(
        {"latency_ms": max_latency_ms, "bytes": max_bytes, "bitops": max_bitops}, constraint or []
    )
    cfg = nas.load_config(
        config,
        space=space,
        dataset=dataset,
        evaluators=evaluator or None,
        objectives=objective or None,
        sampler=sampler,
        pruner=pruner,
        trials=trials,
        timeout=timeout,
        seed=seed,
        device=device,
        storage=storage,
        study=study,
        constraints=limits or None,
        warmup=_whole("warmup", warmup),
        warmup_proxy=warmup_proxy,
        warmup_top=_whole("warmup_top", warmup_top),
        artifacts=artifacts,
        **_run_options(parallel, backend, max_retries, cpus_per_trial, gpus_per_trial, ray_address),
    )
    with _SearchProgress(cfg.trials, quiet, resume) as progress:
        result = nas.search(
            cfg,
            callbacks=[progress.update],
            on_start=progress.start,
            on_warmup=progress.warmup,
            resume=resume,
        )
    _print_summary(result)
    _print_warmup(result)


def _run_options(
    parallel: str | None,
    backend: str | None,
    max_retries: str | None,
    cpus_per_trial: str | None,
    gpus_per_trial: str | None,
    ray_address: str | None,
) -> dict[str, Any]:
    """How the evaluations run, from the command line (numbers checked here)."""
    return {
        "parallel": _whole("parallel", parallel),
        "backend": backend,
        "max_retries": _whole("max_retries", max_retries),
        "cpus_per_trial": _real("cpus_per_trial", cpus_per_trial),
        "gpus_per_trial": _real("gpus_per_trial", gpus_per_trial),
        "ray_address": ray_address,
    }


def _print_summary(result: Any) -> None:
    cfg = result.plan.config
    s = result.summary
    if result.recovered:
        err.print(
            f"recovered {len(result.recovered)} trials a stopped driver left running "
            f"({', '.join(map(str, result.recovered))}): queued to run again"
        )
    emit(result.pareto, Format.table, f"Pareto front of study {cfg.study!r}")
    total = s.evaluations_run + s.evaluations_reused
    feasible = f" ({s.feasible} feasible)" if cfg.constraints else ""
    err.print(
        f"{s.complete} trials complete{feasible}, {s.failed} failed"
        + (f", {s.pruned} pruned" if s.pruned else "")
        + f" in {s.seconds:.1f} s; "
        f"evaluations: {s.evaluations_run} run, {s.evaluations_reused} of {total} reused "
        f"from storage. Study {cfg.study!r} has {len(result.study.trials)} trials."
    )


@app.command(
    epilog="Example: nas worker nas --storage postgresql+psycopg://nas@db-host/nas --trials 50"
)
def worker(
    study: Annotated[str, typer.Argument(help="The study to join (created by nas search).")],
    storage: StorageOpt = "sqlite:///nas.db",
    trials: Annotated[
        str | None,
        typer.Option(
            "--trials",
            "-n",
            metavar="<int>",
            help="Trials this worker runs; default: until the study has its --trials.",
        ),
    ] = None,
    seed: Annotated[
        str | None, typer.Option(metavar="<int>", help="Sampler seed (default: per process).")
    ] = None,
    device: Annotated[str | None, typer.Option(help="cpu | cuda | auto.")] = None,
    parallel: ParallelOpt = None,
    backend: BackendOpt = None,
    max_retries: MaxRetriesOpt = None,
    cpus_per_trial: CpusOpt = None,
    gpus_per_trial: GpusOpt = None,
    ray_address: RayAddressOpt = None,
    artifacts: ArtifactsOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Join an existing study on a shared database and run its search here.

    The way to spread one search over machines without Ray: create the study once
    (nas search --storage URL), then start `nas worker STUDY --storage URL` on each
    machine. Each worker runs its own ask/tell loop with the study's space,
    evaluators, objectives, constraints and sampler, writes only its own trials,
    and reuses what the others have evaluated. Trials a stopped worker left running
    are recovered by the others.
    """
    import nas

    n = _whole("trials", trials)
    with _SearchProgress(n, quiet, resume=n is None) as progress:  # else: toward the study's
        result = nas.join(
            study,
            storage,
            trials=n,
            callbacks=[progress.update],
            on_start=progress.start,
            seed=_whole("seed", seed),
            device=device,
            artifacts=artifacts,
            **_run_options(
                parallel, backend, max_retries, cpus_per_trial, gpus_per_trial, ray_address
            ),
        )
    _print_summary(result)


def _print_warmup(result: Any) -> None:
    cfg, w = result.plan.config, result.warmup
    if w is not None:
        err.print(
            f"warm-up: {w.scored} of {w.n} candidates scored by {w.proxy} ({w.failed} failed; "
            f"{w.evaluations_run} run, {w.evaluations_reused} reused); the best "
            f"{len(w.enqueued)} were the first trials."
        )
    elif cfg.warmup:
        err.print(
            f"warm-up skipped: study {cfg.study!r} already had trials "
            "(a study is warmed up only before its first trial)."
        )


def _whole(field: str, text: str | None) -> int | None:
    """A whole number from the command line; anything else is a one-line ConfigError."""
    return None if text is None else _parsed(field, text, int, "a whole number")


def _real(field: str, text: str | None) -> float | None:
    """A number from the command line; anything else is a one-line ConfigError."""
    return None if text is None else _parsed(field, text, float, "a number")


def _parsed(field: str, text: str, cast: Callable[[str], Any], what: str) -> Any:
    try:
        return cast(text)
    except ValueError:
        raise ConfigError(field, f"expected {what}, got {text!r}") from None


def _limits(flags: dict[str, str | None], constraints: list[str]) -> dict[str, float]:
    """The constraints given on the command line; a metric limited twice is an error."""
    from nas._config import parse_constraint
    from nas._errors import ConfigError

    pairs = [(metric, _number(metric, text)) for metric, text in flags.items() if text is not None]
    pairs += [parse_constraint(text) for text in constraints]
    limits: dict[str, float] = {}
    for metric, value in pairs:
        if metric in limits:
            raise ConfigError(
                f"constraints.{metric}", f"limited twice ({limits[metric]:g} and {value:g})"
            )
        limits[metric] = value
    return limits


def _number(metric: str, text: str) -> float:
    from nas._errors import ConfigError

    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"constraints.{metric}", f"expected a number, got {text!r}") from None


class _SearchProgress:
    """A rich progress bar: trials done, best so far, elapsed."""

    def __init__(self, total: int | None, quiet: bool, resume: bool = False) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[best]}"),
            TimeElapsedColumn(),
            console=err,
            disable=quiet,
        )
        # Added first, so shown above the search's bar; visible once a warm-up runs.
        self.warmup_task = self.progress.add_task("warm-up", total=None, best="", visible=False)
        self.task = self.progress.add_task("search", total=total, best="")
        self.best: float | None = None
        self.label = ""
        self.started = False
        self.resume = resume

    def start(self, plan: Any, study: Any) -> None:
        """Called once everything is checked: only now does the bar appear."""
        obj = plan.objectives[0]
        self.label, self.sign = obj.metric, (1 if obj.direction == "maximize" else -1)
        self.progress.update(self.warmup_task, description=f"warm-up {plan.config.warmup_proxy}")
        self.progress.update(self.task, description=f"search {study.study_name}")
        if study.trials:
            err.print(f"continuing study {study.study_name!r}: {len(study.trials)} trials so far")
        if self.resume:  # the bar counts toward the study's total, from what it has
            from nas.workers._heartbeat import counted_trials

            total, done = plan.config.trials, counted_trials(study)
            self.progress.update(self.task, total=total, completed=done)
        self.progress.start()
        self.started = True

    def warmup(self, done: int, total: int) -> None:
        """The warm-up's own bar, above the search's: candidates scored so far."""
        self.progress.update(self.warmup_task, completed=done, total=total, visible=True)

    def update(self, outcome: Any) -> None:
        if outcome.values and outcome.feasible:
            value = outcome.values[0]
            if self.best is None or self.sign * value > self.sign * self.best:
                self.best = value
        best = f"best {self.label} {self.best:.4g}" if self.best is not None else ""
        self.progress.update(self.task, advance=1, best=best)

    def __enter__(self) -> _SearchProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.started:
            self.progress.stop()


@app.command(epilog="Example: nas status nas --reference 0,2e6 --format json")
def status(
    study: Annotated[str | None, typer.Argument(help="A study; all studies when omitted.")] = None,
    storage: StorageOpt = "sqlite:///nas.db",
    reference: ReferenceOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Trial counts by state, objectives and failure reasons.

    With --reference (one study only): also the hypervolume of its feasible front.
    """
    import nas
    from nas._config import parse_reference

    point = parse_reference(reference) if reference is not None else None
    if study is None:
        if point is not None:
            raise ConfigError("reference", "needs a STUDY: objectives differ between studies")
        emit(nas.studies(storage), fmt, "Studies")
    else:
        row = nas.study_status(nas.load_study(study, storage), point)
        emit(row, fmt, f"Study {study!r}")


@app.command(
    epilog="Example: nas pareto nas --format json | nas pareto nas --reference 0,2e6"
    " | nas pareto nas --plot pareto.html --x params --y naswot"
)
def pareto(
    study: Annotated[str, typer.Argument(help="The study to read.")],
    storage: StorageOpt = "sqlite:///nas.db",
    reference: ReferenceOpt = None,
    plot: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE.html|FILE.png",
            help="Also plot every trial and the front: self-contained HTML or PNG.",
        ),
    ] = None,
    x: Annotated[
        str | None,
        typer.Option("--x", help="--plot: x metric (default: the first minimized objective)."),
    ] = None,
    y: Annotated[
        str | None,
        typer.Option("--y", help="--plot: y metric (default: the first maximized objective)."),
    ] = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """The Pareto front of a study: objectives, cost and architecture of each trial.

    With --reference, the front's hypervolume against that point follows as a line
    on standard error: standard output stays the front alone, in either format
    (scripts read the number from `nas status STUDY --reference ... -f json`).

    With --plot, every complete trial is also drawn (infeasible ones as grey
    crosses, the front in red joined by a step line, a dashed line at each
    constrained metric's limit) on --x/--y, any objective or stored metric; the
    file's path follows on standard error.
    """
    import nas
    from nas._api import front_hypervolume
    from nas._config import parse_reference

    point = parse_reference(reference) if reference is not None else None
    if plot is None and (x is not None or y is not None):
        raise ConfigError("x" if x is not None else "y", "chooses an axis of --plot; give --plot")
    loaded = nas.load_study(study, storage)
    volume = front_hypervolume(loaded, point) if point is not None else None
    written = None
    if plot is not None:  # before the table: a bad --plot is one line and nothing else
        from nas._plots import write_pareto_plot

        written = write_pareto_plot(loaded, plot, x, y)
    rows = nas.pareto(loaded)
    emit(rows, fmt, f"Pareto front of study {study!r}")
    if point is not None:
        at = ", ".join(f"{v:g}" for v in point)
        err.print(f"hypervolume of the {len(rows)}-trial front against ({at}): {volume:.6g}")
    if written is not None:
        err.print(f"wrote {written}", markup=False, highlight=False, soft_wrap=True)


@app.command(epilog="Example: nas report nas --out report.html --storage sqlite:///nas.db")
def report(
    study: Annotated[str, typer.Argument(help="The study to report on.")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="The HTML file to write (self-contained).")
    ] = Path("report.html"),
    storage: StorageOpt = "sqlite:///nas.db",
) -> None:
    """One self-contained HTML page about a study, to open in any browser, offline.

    Its sections: the search's settings; trials by state; the best value of each
    objective so far, by trial and by wall time; the Pareto plot and table; each
    proxy's Spearman correlation with trained val_acc; the latency predictor's
    error against measured latencies; failure reasons and pruning. A section
    without data says so. The path written is printed.
    """
    import nas
    from nas._plots import output_path
    from nas._report import write_report

    output_path("out", out, (".html", ".htm"))  # before reading: a bad path is one line
    written = write_report(nas.load_study(study, storage), out, storage)
    print(written)


@app.command(epilog="Example: nas dashboard nas --storage sqlite:///nas.db --port 8080")
def dashboard(
    study: Annotated[
        str | None, typer.Argument(help="A study to open; the list of studies when omitted.")
    ] = None,
    storage: StorageOpt = "sqlite:///nas.db",
    host: Annotated[
        str, typer.Option(help="Address to listen on; 0.0.0.0 opens it to other machines.")
    ] = "127.0.0.1",
    port: Annotated[
        str, typer.Option(metavar="<int>", help="Port to listen on; 0 takes any free one.")
    ] = "8080",
    artifacts: Annotated[
        Path | None,
        typer.Option(help="Artifact directory; default: the study's (user attr nas.artifacts)."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No log line per request.")] = False,
) -> None:
    """Optuna's dashboard on the study's database: trials, user attrs, plots, artifacts.

    Prints the URL to open (the study's page), then serves until Ctrl-C. Each
    trial's model.onnx and arch.json are listed with it when the artifact
    directory is known: the one the study recorded, or --artifacts DIR.
    """
    from nas._dashboard import serve

    number = _parsed("port", port, int, "a whole number")
    serve(storage, study, host=host, port=number, artifact_dir=artifacts, quiet=quiet)


@app.command(
    epilog="Examples: nas profile arch.json --format json | nas profile model.onnx --processes 1"
    " | nas profile --calibrate --space cnn-small --dataset digits --models 20"
)
def profile(
    target: Annotated[
        Path | None,
        typer.Argument(help="An architecture (.json, as in trial user attrs) or a .onnx model."),
    ] = None,
    calibrate: Annotated[
        bool,
        typer.Option("--calibrate", help="Build this machine's latency predictor and store it."),
    ] = False,
    space: Annotated[str, typer.Option(help="--calibrate: the space to sample.")] = "cnn-small",
    dataset: Annotated[
        str, typer.Option(help="--calibrate: the data set giving the input shape.")
    ] = "digits",
    models: Annotated[
        int, typer.Option(help="--calibrate: whole models to measure for the correction.")
    ] = 20,
    runs: Annotated[int | None, typer.Option(help="Timed runs per process (200).")] = None,
    processes: Annotated[
        int | None, typer.Option(help="Fresh processes; the median is taken (3).")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="Intra-op threads (1).")] = None,
    provider: Annotated[
        str | None, typer.Option(help="cpu | cuda | tensorrt (onnxruntime-gpu).")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch of the exported model (1).")] = None,
    precision: Annotated[
        str | None, typer.Option(help="qdq (quantized layers as QDQ) | float.")
    ] = None,
    low_bits: Annotated[
        str | None, typer.Option(help="Weights below 8 bits as int4 | int8.")
    ] = None,
    reference: Annotated[
        bool, typer.Option(help="Interleave a fixed reference model; report the ratio.")
    ] = False,
    remeasure: Annotated[
        bool, typer.Option(help="Measure even if this fingerprint has a stored profile.")
    ] = False,
    storage: Annotated[
        str | None,
        typer.Option(help="Database URL for the latency cache (default sqlite:///nas.db)."),
    ] = "sqlite:///nas.db",
    fmt: FormatOpt = Format.table,
) -> None:
    """Latency of one model on ONNX Runtime, under the measurement protocol.

    The protocol: 1 intra-op thread, sequential execution, full graph optimization,
    IOBinding, warm-up of 10 runs and 0.5 s, 200 timed runs, in 3 fresh processes;
    latency_ms is the p10 (median across processes). Results are stored per
    hardware fingerprint (CPU, cores, ORT version, provider, threads, batch,
    precision): profiling again on the same fingerprint reads the stored row.

    With --calibrate: time every distinct kernel of --models sampled architectures
    once, measure those architectures whole, fit the predictor and store it (the
    `latency` evaluator's mode predict uses it).
    """
    from nas._profile import calibrate as run_calibrate
    from nas._profile import latency_settings
    from nas._profile import profile as run_profile

    settings = latency_settings(
        runs=runs,
        processes=processes,
        threads=threads,
        provider=provider,
        batch_size=batch_size,
        precision=precision,
        low_bits=low_bits,
        reference=reference or None,
    )
    if calibrate:
        if target is not None:
            raise ConfigError("target", "--calibrate samples its own models; give no TARGET")
        from nas.evaluators import load_dataset

        data = load_dataset(dataset)
        with err.status("calibrating the latency predictor") as status:
            result = run_calibrate(
                space,
                data.input_shape,
                data.num_classes,
                settings,
                storage=storage or "sqlite:///nas.db",
                models=models,
                progress=lambda text: status.update(text),
            )
        emit(result, fmt, "Latency predictor")
        return
    if target is None:
        raise ConfigError("target", "give an ARCH.json or MODEL.onnx, or --calibrate")
    with err.status(f"profiling {target}"):
        row = run_profile(target, settings, storage=storage, remeasure=remeasure)
    if fmt == Format.json:
        emit(row, fmt)
        return
    paths = row.pop("kernel_paths")
    emit(row, fmt, f"Latency of {target}")
    if paths:
        emit(paths, fmt, "Kernel path of each weighted layer (what ONNX Runtime ran)")


@app.command(
    epilog="Example: nas export nas --best --out model/ | nas export nas --trial 12 --out m12/"
    " | nas export nas --best --max-latency-ms 0.05 --max-bytes 20000 --out small/"
)
def export(
    study: Annotated[str, typer.Argument(help="The study to export from.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write (created).")],
    trial: Annotated[
        str | None, typer.Option(metavar="<int>", help="Export this trial (by number).")
    ] = None,
    best: Annotated[
        bool, typer.Option("--best", help="Export the best trial of the feasible front.")
    ] = False,
    max_latency_ms: Annotated[
        str | None, typer.Option(metavar="<float>", help="--best: latency_ms <= this.")
    ] = None,
    max_bytes: Annotated[
        str | None, typer.Option(metavar="<float>", help="--best: bytes <= this.")
    ] = None,
    max_bitops: Annotated[
        str | None, typer.Option(metavar="<float>", help="--best: bitops <= this.")
    ] = None,
    constraint: Annotated[
        list[str] | None,
        typer.Option("--constraint", "-c", help="--best: METRIC<=VALUE, repeatable."),
    ] = None,
    prefer: Annotated[
        str | None,
        typer.Option(help="--best: the objective to be best at (default: the first maximized)."),
    ] = None,
    batch_size: Annotated[
        str | None, typer.Option(metavar="<int>", help="The ONNX model's batch size (1).")
    ] = None,
    storage: StorageOpt = "sqlite:///nas.db",
    fmt: FormatOpt = Format.table,
) -> None:
    """Write a trial's network, ready to ship: model.onnx, arch.json, weights, model card.

    The directory gets model.onnx (QDQ for the quantized layers), arch.json,
    weights.safetensors when the candidate was trained, metrics.json and README.md
    (a model card: objectives, cost, latency and its hardware, data set, training
    settings, how to load it in PyTorch and ONNX Runtime). A trained network is
    loaded back from the written files and its validation accuracy recomputed, in
    PyTorch and in ONNX Runtime, next to the stored value.

    --best picks from the feasible Pareto front, within the limits given here on top
    of the study's constraints, the trial best at --prefer, and says so.
    """
    from nas._export import export as export_trial

    number = _whole("trial", trial)
    limits = _limits(
        {"latency_ms": max_latency_ms, "bytes": max_bytes, "bitops": max_bitops}, constraint or []
    )
    if (number is None) == (not best):
        raise ConfigError("trial", "give either --trial N or --best")
    if number is not None and (limits or prefer):
        raise ConfigError("trial", "limits and --prefer go with --best, not --trial")
    result = export_trial(
        study,
        out,
        trial=number,
        limits=limits,
        prefer=prefer,
        storage=storage,
        batch_size=_whole("batch_size", batch_size) or 1,
    )
    if fmt == Format.json:
        emit(result.as_dict(), fmt)
        return
    err.print(result.choice, markup=False, highlight=False, soft_wrap=True)
    rows = [{"file": str(result.out / name), "bytes": size} for name, size in result.files.items()]
    emit(rows, fmt, f"trial {result.trial} of study {study!r}")
    for key, value in result.reloaded.items():
        err.print(
            f"{key} from the written files: {value:.4f} (stored val_acc "
            f"{result.metrics.get('val_acc', float('nan')):.4f})",
            highlight=False,
        )
    if result.onnx_missing:
        err.print(f"no model.onnx: {result.onnx_missing}", markup=False, highlight=False)


@app.command(epilog="Example: nas spaces --format json")
def spaces(fmt: FormatOpt = Format.table) -> None:
    """The built-in search spaces, with a one-line description each."""
    from nas.search_space import space_infos

    rows = space_infos()
    if fmt == Format.table:
        rows = [{**r, "size": f"{r['size']:.2e}"} for r in rows]
    emit(rows, fmt, "Search spaces")


@app.command(epilog="Example: nas evaluators --format json")
def evaluators(fmt: FormatOpt = Format.table) -> None:
    """The registered evaluators (zero-cost proxies and baselines) and their metrics."""
    from nas.evaluators import evaluator_infos

    emit(evaluator_infos(), fmt, "Evaluators")


@app.command(epilog="Example: nas samplers --format json")
def samplers(fmt: FormatOpt = Format.table) -> None:
    """The search strategies behind --sampler, and the options each takes (sampler_options)."""
    from nas.strategies import SAMPLERS

    rows = [
        {"name": name, "description": info.description, "options": list(info.options)}
        for name, info in SAMPLERS.items()
    ]
    emit(rows, fmt, "Samplers")


@app.command(epilog="Example: nas datasets --format json")
def datasets(fmt: FormatOpt = Format.table) -> None:
    """The registered data sets with their sizes and shapes."""
    from nas.evaluators import dataset_infos

    emit(dataset_infos(), fmt, "Data sets")


def main() -> None:
    """Console entry point: user errors become one line and exit status 2."""
    try:
        app()
    except NasError as exc:
        from rich.markup import escape

        # The message is text, not markup: "[ONNXRuntimeError]" or "a.json:x:" must print as is.
        err.print(
            f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True, emoji=False
        )
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted; finished trials are stored")
        sys.exit(130)


if __name__ == "__main__":
    main()
