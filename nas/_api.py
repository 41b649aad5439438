"""The Python API; the CLI is a thin layer over these functions."""

from __future__ import annotations

import json
import math
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas._config import SearchConfig, config_from_dict, load_config
from nas._errors import ConfigError, NasError
from nas._plan import Plan, make_plan
from nas.storage import Store
from nas.strategies import make_pruner, make_sampler
from nas.strategies._pareto import hypervolume, non_dominated
from nas.workers import Scheduler, SearchSummary, TrialOutcome
from nas.workers._artifacts import (
    ARTIFACTS_ATTR,
    TrialArtifacts,
    artifact_dir,
    default_artifact_dir,
)
from nas.workers._backends import Backend, LocalBackend, ProcessBackend
from nas.workers._heartbeat import counted_trials, driver_id, recover_stale
from nas.workers._warmup import Progress, WarmupResult, warm_up

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


@dataclass
class SearchResult:
    """A finished :func:`search`: the study and what this run did."""

    study: optuna.Study
    summary: SearchSummary
    plan: Plan
    #: What the zero-cost warm-up did; None if there was none (not asked, or a continued study).
    warmup: WarmupResult | None = None
    #: Numbers of the trials found stale (their driver had stopped) and queued again.
    recovered: list[int] = field(default_factory=list)

    @property
    def pareto(self) -> list[dict[str, Any]]:
        return pareto(self.study)


def search(
    config: SearchConfig | dict[str, Any] | str | Path | None = None,
    *,
    callbacks: Sequence[Callable[[TrialOutcome], None]] = (),
    on_start: Callable[[Plan, optuna.Study], None] | None = None,
    on_warmup: Progress | None = None,
    resume: bool = False,
) -> SearchResult:
    """Run a search; a study of that name in that storage is continued.

    A continued study first recovers the trials a stopped driver left RUNNING:
    they are failed (user attr ``stale``) and their architectures run again first;
    evaluations already stored are reused. ``trials`` more trials are run, or with
    ``resume=True`` as many as the study lacks to have ``trials`` (stale ones not
    counted), so a killed search resumed with the same command ends where it would
    have ended.

    With ``warmup: N`` a new study first scores N random candidates with
    ``warmup_proxy`` and enqueues the best ``warmup_top`` as its first trials
    (they count toward ``trials``); ``on_warmup(done, total)`` follows the scoring.
    A study is warmed up only before its first trial, so a continued one is not.

    Example:
        >>> import nas
        >>> result = nas.search({"trials": 3, "storage": "sqlite:///example.db"})
        >>> result.summary.complete
        3
        >>> warm = nas.search({"trials": 3, "warmup": 20, "warmup_proxy": "params",
        ...                    "storage": "sqlite:///example.db", "study": "warm"})
        >>> len(warm.warmup.enqueued)
        3
    """
    return _search(_as_config(config), callbacks, on_start, on_warmup, resume=resume)


def join(
    study: str,
    storage: str = "sqlite:///nas.db",
    *,
    trials: int | None = None,
    callbacks: Sequence[Callable[[TrialOutcome], None]] = (),
    on_start: Callable[[Plan, optuna.Study], None] | None = None,
    **overrides: Any,
) -> SearchResult:
    """Join an existing study as one more driver with its own ask/tell loop.

    The space, data set, evaluators, objectives, constraints and sampler are the
    study's own (as ``nas search`` recorded them); ``overrides`` may change how this
    driver runs (``parallel``, ``backend``, ``seed``, ``device``...). Several drivers
    on one database (PostgreSQL across machines) share the study: each writes only
    its own trials, and an architecture one has evaluated the others reuse.

    ``trials`` trials are run by this driver; without it, drivers ask until the
    study has as many trials as it was created with (each may ask one past it).

    Example:
        >>> import nas
        >>> _ = nas.search({"trials": 2, "storage": "sqlite:///example.db", "study": "j"})
        >>> nas.join("j", "sqlite:///example.db", trials=2).summary.complete
        2
    """
    cfg = joined_config(study, storage, trials, overrides)
    total = None if trials is not None else cfg.trials
    return _search(cfg, callbacks, on_start, None, total=total)


def joined_config(
    study: str, storage: str, trials: int | None, overrides: dict[str, Any]
) -> SearchConfig:
    """The config of a driver joining ``study``: the study's search, this driver's options."""
    loaded = load_study(study, storage)
    attrs = loaded.user_attrs
    if "nas.space" not in attrs:
        raise ConfigError(
            "study", f"study {study!r} was not created by nas search; it has no search to join"
        )
    run = dict(attrs.get("nas.run", {}))
    total = run.pop("trials", None)
    data: dict[str, Any] = {
        "space": attrs["nas.space"],
        "dataset": attrs["nas.dataset"],
        "evaluators": attrs["nas.evaluators"],
        "objectives": attrs["nas.objectives"],
        "constraints": attrs.get("nas.constraints", {}),
        **run,
        # Drivers that join at once must not propose the same candidates.
        "seed": zlib.crc32(driver_id().encode()) % 2**31,
        "storage": storage,
        "study": study,
    }
    data.update({k: v for k, v in overrides.items() if v is not None})
    data["trials"] = trials if trials is not None else total or len(loaded.trials)
    return config_from_dict(data)


def _search(
    config: SearchConfig,
    callbacks: Sequence[Callable[[TrialOutcome], None]],
    on_start: Callable[[Plan, optuna.Study], None] | None,
    on_warmup: Progress | None,
    *,
    resume: bool = False,
    total: int | None = None,
) -> SearchResult:
    plan = make_plan(config)
    cfg = plan.config
    store = Store(cfg.storage, heartbeat_grace=cfg.heartbeat_grace)
    warmup = None
    try:
        proxy = plan.warmup_proxy
        extra = [] if proxy is None or proxy in plan.evaluators else [proxy]
        for ev in (*plan.evaluators, *extra):  # before the study: a missing predictor is bad
            ev.attach_store(store)  # input; latency keeps its profiles in the store's tables
        if resume and not _existing_trials(store.optuna_storage(), cfg.study):
            raise ConfigError(
                "resume", f"no study {cfg.study!r} with trials in {store.masked_url} to resume"
            )
        # Before the study: a Ray cluster that cannot be reached leaves the database as it was.
        with make_backend(plan) as backend:
            study = _open_study(plan, store)
            recovered = recover_stale(study)
            n_trials = cfg.trials - counted_trials(study) if resume else cfg.trials
            if on_start is not None:
                on_start(plan, study)
            if plan.warmup_proxy is not None and _needs_warmup(study):
                warmup = warm_up(
                    study,
                    plan.space,
                    plan.warmup_proxy,
                    plan.context,
                    store,
                    n=cfg.warmup,
                    top=plan.warmup_top,
                    seed=cfg.seed,
                    progress=on_warmup,
                )
            scheduler = Scheduler(
                study,
                plan.space,
                plan.evaluators,
                plan.context,
                plan.objectives,
                store,
                backend=backend,
                constraints=plan.constraints,
                artifacts=_trial_artifacts(cfg, study),
            )
            summary = scheduler.run(max(0, n_trials), cfg.timeout, callbacks, total)
    finally:
        store.close()
    return SearchResult(study, summary, plan, warmup, recovered)


def make_backend(plan: Plan) -> Backend:
    """The plan's backend: this process, a local process pool, or Ray actors."""
    cfg = plan.config
    if plan.backend == "local":
        return LocalBackend(plan.evaluators, plan.context)
    if plan.backend == "process":
        return ProcessBackend(plan.worker_setup(), cfg.parallel, cfg.max_retries)
    from nas.workers._ray import RayBackend

    return RayBackend(
        plan.worker_setup(),
        cfg.parallel,
        cfg.max_retries,
        address=cfg.ray_address,
        cpus_per_trial=cfg.cpus_per_trial or 1.0,
        gpus_per_trial=cfg.gpus_per_trial,
    )


def _trial_artifacts(cfg: SearchConfig, study: optuna.Study) -> TrialArtifacts | None:
    """Where this study's trials upload their files, recorded in the study (None: nowhere)."""
    if cfg.artifacts == "none":
        return None
    recorded = artifact_dir(study)
    if cfg.artifacts == "auto":
        directory = recorded or default_artifact_dir(cfg.storage)
    else:
        directory = Path(cfg.artifacts).expanduser().absolute()
        if recorded is not None and recorded != directory:
            raise ConfigError(
                "artifacts",
                f"study {study.study_name!r} keeps its artifacts in {recorded}; "
                "leave --artifacts out to continue there, or give none",
            )
    if directory is None:
        return None
    try:
        artifacts = TrialArtifacts(directory, seed=cfg.eval_seed)
    except OSError as exc:
        raise ConfigError(
            "artifacts", f"cannot use {directory} ({exc.strerror}); give a directory or none"
        ) from None
    if recorded is None:
        study.set_user_attr(ARTIFACTS_ATTR, str(directory))
    return artifacts


def _needs_warmup(study: optuna.Study) -> bool:
    """Only before the first trial: a continued study keeps the course it has."""
    return not study.get_trials(deepcopy=False) and "nas.warmup" not in study.user_attrs


def _as_config(config: SearchConfig | dict[str, Any] | str | Path | None) -> SearchConfig:
    if isinstance(config, SearchConfig):
        return config
    if isinstance(config, dict):
        return load_config(None, **config)
    return load_config(config)


def _open_study(plan: Plan, store: Store) -> optuna.Study:
    cfg = plan.config
    directions = [o.direction for o in plan.objectives]
    storage = store.optuna_storage()
    existing = _existing_trials(storage, cfg.study)
    # A continued study gets a fresh stream of random numbers: replaying the first run's
    # seed would propose the architectures it already has.
    seed = cfg.seed + existing
    study = optuna.create_study(
        study_name=cfg.study,
        storage=storage,
        directions=directions,
        sampler=make_sampler(cfg.sampler, seed, len(directions), cfg.sampler_options),
        pruner=make_pruner(cfg.pruner, plan.max_epochs()),
        load_if_exists=True,
    )
    attrs = plan.study_attrs()
    if existing or study.user_attrs:
        _check_same_search(study, attrs, directions)
    else:
        for key, value in {**attrs, **plan.run_attrs()}.items():
            study.set_user_attr(key, value)
        # The dashboard reads these (optuna_dashboard.set_objective_names is deprecated for it).
        study.set_metric_names([o.metric for o in plan.objectives])
    return study


def _existing_trials(storage: optuna.storages.BaseStorage, name: str) -> int:
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return 0
    return len(storage.get_all_trials(study_id, deepcopy=False))


#: What a study created before an attr existed had instead: no constraints, for instance.
_ABSENT_ATTRS: dict[str, Any] = {"nas.constraints": {}}


def _check_same_search(
    study: optuna.Study, attrs: dict[str, Any], directions: Sequence[str]
) -> None:
    if [d.name.lower() for d in study.directions] != directions:
        raise ConfigError(
            "study", f"study {study.study_name!r} has other objectives; choose another --study"
        )
    for key, value in attrs.items():
        stored = study.user_attrs.get(key, _ABSENT_ATTRS.get(key))
        if json.dumps(stored, sort_keys=True) != json.dumps(value, sort_keys=True):
            what = "set of constraints" if key == "nas.constraints" else key.removeprefix("nas.")
            raise ConfigError(
                "study",
                f"study {study.study_name!r} was created with another {what}; "
                "choose another --study to search this one",
            )


def load_study(study: str, storage: str = "sqlite:///nas.db") -> optuna.Study:
    """An existing study, read from ``storage``.

    Example:
        >>> import nas
        >>> _ = nas.search({"trials": 2, "storage": "sqlite:///example.db", "study": "s"})
    """
    with Store(storage, create=False) as store:
        try:
            return optuna.load_study(study_name=study, storage=store.optuna_storage())
        except KeyError:
            names = optuna.get_all_study_names(store.optuna_storage())
            known = ", ".join(names) or "(none)"
            raise ConfigError(
                "study", f"no study {study!r} in {store.masked_url}; studies: {known}"
            ) from None


def study_storage_url(study: optuna.Study) -> str | None:
    """The database URL a study reads, if it is an RDB storage (Optuna wraps it in a cache)."""
    storage: Any = study._storage  # Optuna has no public handle on it
    url = getattr(getattr(storage, "_backend", storage), "url", None)
    return url if isinstance(url, str) else None


def studies(storage: str = "sqlite:///nas.db") -> list[dict[str, Any]]:
    """Every study in ``storage`` with its trial counts and objectives."""
    with Store(storage, create=False) as store:
        rows = []
        for s in optuna.get_all_study_summaries(store.optuna_storage(), include_best_trial=False):
            rows.append(
                _study_row(
                    optuna.load_study(study_name=s.study_name, storage=store.optuna_storage())
                )
            )
        return rows


def study_status(study: optuna.Study, reference: Sequence[float] | None = None) -> dict[str, Any]:
    """Counts by state (and of feasible trials), objectives, constraints and failure reasons.

    With a ``reference`` point (one value per objective), also the ``hypervolume``
    of the feasible front against it (see :func:`front_hypervolume`).
    """
    row = _study_row(study)
    failures: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        reason = str(t.user_attrs.get("error", "unknown"))
        failures[reason] = failures.get(reason, 0) + 1
    row["constraints"] = _constraints(study)
    row["failures"] = failures
    row["space"] = study.user_attrs.get("nas.space", {}).get("name")
    row["dataset"] = study.user_attrs.get("nas.dataset", {}).get("name")
    if "nas.warmup" in study.user_attrs:
        warm = study.user_attrs["nas.warmup"]
        row["warmup"] = f"{len(warm['enqueued'])} best of {warm['n']} by {warm['proxy']}"
    if reference is not None:
        row["reference"] = list(reference)
        row["hypervolume"] = front_hypervolume(study, reference)
    return row


def front_hypervolume(study: optuna.Study, reference: Sequence[float]) -> float:
    """The hypervolume of the feasible Pareto front against ``reference``, exactly.

    ``reference`` has one value per objective, worse than the front's in each (a
    trial not better than it in every objective adds nothing). 0.0 with no
    feasible trial. ConfigError if it has the wrong length.

    Example:
        >>> import nas
        >>> from nas._api import front_hypervolume
        >>> result = nas.search({"trials": 3, "storage": "sqlite:///example.db"})
        >>> front_hypervolume(result.study, (0.0, 1e9)) > 0
        True
    """
    directions = _directions(study)
    if len(reference) != len(directions):
        raise ConfigError(
            "reference",
            f"needs one value per objective ({', '.join(_objective_labels(study))}), "
            f"but got {len(reference)}: {', '.join(f'{v:g}' for v in reference)}",
        )
    points = [t.values for t in _front(study)]
    return hypervolume(points, reference, directions)


def _study_row(study: optuna.Study) -> dict[str, Any]:
    trials = study.get_trials(deepcopy=False)
    counts = {state.name.lower(): 0 for state in TrialState}
    for t in trials:
        counts[t.state.name.lower()] += 1
    return {
        "study": study.study_name,
        "objectives": _objective_labels(study),
        "trials": len(trials),
        **{k: v for k, v in counts.items() if k in ("complete", "fail", "running", "pruned")},
        "feasible": sum(_feasible(t) for t in trials),
        "pareto_size": len(_front(study)),
    }


def _constraints(study: optuna.Study) -> dict[str, float]:
    return dict(study.user_attrs.get("nas.constraints", {}))


def _feasible(trial: FrozenTrial) -> bool:
    """COMPLETE and within every limit (a trial told no constraints is within them all)."""
    return trial.state == TrialState.COMPLETE and all(v <= 0 for v in trial.constraints.values())


def _front(study: optuna.Study) -> list[FrozenTrial]:
    """The non-dominated trials among the feasible COMPLETE ones (equal ones all kept).

    Computed here rather than by ``study.best_trials`` (which agrees in Optuna 5,
    tested), so that no infeasible trial is shown whatever a later Optuna does.
    """
    feasible = [t for t in study.get_trials(deepcopy=False) if _feasible(t)]
    keep = non_dominated([t.values for t in feasible], _directions(study))
    return [feasible[i] for i in keep]


def _directions(study: optuna.Study) -> list[str]:
    return [d.name.lower() for d in study.directions]


def metric_names(study: optuna.Study) -> list[str]:
    """The objectives' metric names (``objective0``, ... for a study that has none)."""
    return study.metric_names or [f"objective{i}" for i in range(len(study.directions))]


def metric_value(value: Any) -> float | None:
    """A stored metric (a user attr) as a float; None unless it is a finite real number."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _objective_labels(study: optuna.Study) -> list[str]:
    names = metric_names(study)
    return [f"{d.name.lower()}:{n}" for d, n in zip(study.directions, names, strict=True)]


def pareto(study: optuna.Study) -> list[dict[str, Any]]:
    """The non-dominated feasible trials (the best one for a single objective), as rows.

    Only COMPLETE trials within every constraint count: an infeasible candidate is
    never on the front, even one that would dominate it. Each row has the trial
    number, the objective values by name, the arch_id, the architecture summary,
    its cost and the constrained metrics.
    """
    names = metric_names(study)
    extra = ("params", "macs", "bytes", *_constraints(study))
    return [_trial_row(t, names, extra) for t in sorted(_front(study), key=lambda t: t.values)]


def _trial_row(trial: FrozenTrial, names: list[str], extra: Sequence[str]) -> dict[str, Any]:
    attrs = trial.user_attrs
    row: dict[str, Any] = {"trial": trial.number}
    row.update(dict(zip(names, trial.values, strict=True)))
    row["arch_id"] = attrs.get("arch_id")
    for key in extra:
        if key not in row and key in attrs:
            row[key] = attrs[key]
    row["arch"] = attrs.get("arch")
    return row


__all__ = [
    "NasError",
    "SearchResult",
    "front_hypervolume",
    "join",
    "load_study",
    "pareto",
    "search",
    "studies",
    "study_status",
]
