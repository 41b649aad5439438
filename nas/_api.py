"""The Python API; the CLI is a thin layer over these functions."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas._config import SearchConfig, load_config
from nas._errors import ConfigError, NasError
from nas._plan import Plan, make_plan
from nas.storage import Store
from nas.strategies import make_pruner, make_sampler
from nas.workers import Scheduler, SearchSummary, TrialOutcome

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


@dataclass
class SearchResult:
    """A finished :func:`search`: the study and what this run did."""

    study: optuna.Study
    summary: SearchSummary
    plan: Plan

    @property
    def pareto(self) -> list[dict[str, Any]]:
        return pareto(self.study)


def search(
    config: SearchConfig | dict[str, Any] | str | Path | None = None,
    *,
    callbacks: Sequence[Callable[[TrialOutcome], None]] = (),
    on_start: Callable[[Plan, optuna.Study], None] | None = None,
) -> SearchResult:
    """Run a search; a study of that name in that storage is continued.

    Example:
        >>> import nas
        >>> result = nas.search({"trials": 3, "storage": "sqlite:///example.db"})
        >>> result.summary.complete
        3
    """
    plan = make_plan(_as_config(config))
    cfg = plan.config
    store = Store(cfg.storage)
    try:
        for ev in plan.evaluators:  # before the study: a predictor that is missing is bad input
            ev.attach_store(store)  # latency keeps its profiles in the store's own tables
        study = _open_study(plan, store)
        if on_start is not None:
            on_start(plan, study)
        scheduler = Scheduler(
            study,
            plan.space,
            plan.evaluators,
            plan.context,
            plan.objectives,
            store,
            constraints=plan.constraints,
        )
        summary = scheduler.run(cfg.trials, cfg.timeout, callbacks)
    finally:
        store.close()
    return SearchResult(study, summary, plan)


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
        sampler=make_sampler(cfg.sampler, seed, len(directions)),
        pruner=make_pruner(cfg.pruner, plan.max_epochs()),
        load_if_exists=True,
    )
    attrs = plan.study_attrs()
    if existing or study.user_attrs:
        _check_same_search(study, attrs, directions)
    else:
        for key, value in attrs.items():
            study.set_user_attr(key, value)
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


def study_status(study: optuna.Study) -> dict[str, Any]:
    """Counts by state (and of feasible trials), objectives, constraints and failure reasons."""
    row = _study_row(study)
    failures: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        reason = str(t.user_attrs.get("error", "unknown"))
        failures[reason] = failures.get(reason, 0) + 1
    row["constraints"] = _constraints(study)
    row["failures"] = failures
    row["space"] = study.user_attrs.get("nas.space", {}).get("name")
    row["dataset"] = study.user_attrs.get("nas.dataset", {}).get("name")
    return row


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
    """The non-dominated trials among the feasible COMPLETE ones.

    Optuna 5's ``best_trials`` computes the front over feasible trials once any trial
    has a constraint (documented, and tested here); the filter makes sure that no
    infeasible trial is shown whatever a later Optuna does.
    """
    if not any(_feasible(t) for t in study.get_trials(deepcopy=False)):
        return []
    return [t for t in study.best_trials if _feasible(t)]


def _objective_labels(study: optuna.Study) -> list[str]:
    names = study.metric_names or [f"objective{i}" for i in range(len(study.directions))]
    return [f"{d.name.lower()}:{n}" for d, n in zip(study.directions, names, strict=True)]


def pareto(study: optuna.Study) -> list[dict[str, Any]]:
    """The non-dominated feasible trials (the best one for a single objective), as rows.

    Only COMPLETE trials within every constraint count: an infeasible candidate is
    never on the front, even one that would dominate it. Each row has the trial
    number, the objective values by name, the arch_id, the architecture summary,
    its cost and the constrained metrics.
    """
    names = study.metric_names or [f"objective{i}" for i in range(len(study.directions))]
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
    "load_study",
    "pareto",
    "search",
    "studies",
    "study_status",
]
