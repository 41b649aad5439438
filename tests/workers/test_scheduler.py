from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import optuna
import pytest
from optuna.trial import TrialState

import nas
from nas.evaluators import EVALUATORS, Evaluator, register_evaluator
from nas.storage import Store

SMALL = {"trials": 6, "seed": 1}


def _search(db_url: str, **overrides: Any) -> nas.SearchResult:
    return nas.search({**SMALL, "storage": db_url, **overrides})


def test_search_completes_trials_and_stores_them(db_url: str) -> None:
    result = _search(db_url)
    s = result.summary
    assert (s.complete, s.failed) == (6, 0)
    assert s.evaluations_run == 6 and s.evaluations_reused == 0
    with Store(db_url) as store:
        assert store.count_architectures() == len({o.arch.arch_id for o in s.outcomes})
        for outcome in s.outcomes:
            fp = result.plan.evaluators[0].fingerprint(result.plan.context)
            record = store.get_evaluation(outcome.arch.arch_id, "naswot", fp)
            assert record is not None and record.metrics["naswot"] == outcome.metrics["naswot"]


def test_trials_carry_arch_id_and_metrics_as_user_attrs(db_url: str) -> None:
    study = _search(db_url).study
    trial = study.trials[0]
    assert len(trial.user_attrs["arch_id"]) == 16
    for key in ("naswot", "params", "macs", "bitops", "bytes", "peak_activation_bytes", "arch"):
        assert key in trial.user_attrs
    assert trial.values == [trial.user_attrs["naswot"], trial.user_attrs["macs"]]
    assert study.metric_names == ["naswot", "macs"]


def test_same_seed_new_study_reuses_every_evaluation(db_url: str) -> None:
    first = _search(db_url, study="a")
    second = _search(db_url, study="b")
    assert [o.arch.arch_id for o in first.summary.outcomes] == [
        o.arch.arch_id for o in second.summary.outcomes
    ]
    assert second.summary.evaluations_run == 0
    assert second.summary.evaluations_reused == 6
    assert [t.values for t in first.study.trials] == [t.values for t in second.study.trials]


def test_continuing_a_study_explores_new_architectures(db_url: str) -> None:
    first = _search(db_url, sampler="random")
    second = _search(db_url, sampler="random")
    assert len(second.study.trials) == 12
    ids_first = {o.arch.arch_id for o in first.summary.outcomes}
    ids_second = {o.arch.arch_id for o in second.summary.outcomes}
    assert ids_second - ids_first, "a continued study must not replay the first run's seed"


def test_changing_evaluator_settings_evaluates_again(db_url: str) -> None:
    _search(db_url, study="a")
    again = _search(db_url, study="b", batch_size=32)
    assert again.summary.evaluations_run == 6


def test_continuing_with_another_space_is_refused(db_url: str) -> None:
    _search(db_url, trials=1)
    with pytest.raises(nas.ConfigError, match="another space"):
        _search(db_url, trials=1, space="cnn-mobile")
    assert len(nas.load_study("nas", db_url).trials) == 1


def test_other_objectives_on_an_existing_study_are_refused(db_url: str) -> None:
    _search(db_url, trials=1)
    with pytest.raises(nas.ConfigError, match="other objectives"):
        _search(db_url, trials=1, objectives=["maximize:naswot"])


class _Explodes(Evaluator):
    name: ClassVar[str] = "test-explodes"
    description: ClassVar[str] = "raises for architectures with an identity layer"
    metrics: ClassVar[tuple[str, ...]] = ("boom",)
    directions: ClassVar[dict[str, Any]] = {"boom": "maximize"}

    def _evaluate(self, arch: Any, ctx: Any) -> dict[str, float]:
        if any(layer.type == "identity" for layer in arch.layers):
            raise RuntimeError("identity is not allowed here\nsecond line")
        return {"boom": 1.0}


@pytest.fixture
def explodes() -> Iterator[None]:
    register_evaluator(_Explodes)
    yield
    EVALUATORS.unregister(_Explodes.name)


@pytest.mark.usefixtures("explodes")
def test_a_candidate_that_raises_fails_and_the_search_goes_on(db_url: str) -> None:
    result = _search(
        db_url,
        trials=25,
        sampler="random",
        evaluators=["test-explodes"],
        objectives=["maximize:boom"],
    )
    states = [t.state for t in result.study.trials]
    assert TrialState.FAIL in states and TrialState.COMPLETE in states
    assert len(states) == 25
    failed = [t for t in result.study.trials if t.state == TrialState.FAIL]
    assert failed[0].user_attrs["error"] == "RuntimeError: identity is not allowed here"
    with Store(db_url) as store:
        errors = [e for e in store.list_evaluations(evaluator="test-explodes") if e.error]
    assert len(errors) == len(failed)


def test_timeout_stops_asking(db_url: str) -> None:
    result = _search(db_url, trials=1000, timeout=1.0)
    assert 1 <= result.summary.complete < 1000


@pytest.mark.parametrize("sampler", ["random", "tpe", "nsga2"])
def test_every_sampler_runs_and_is_reproducible(db_url: str, tmp_path: Path, sampler: str) -> None:
    a = _search(db_url, sampler=sampler, study="a", trials=4)
    b = _search(f"sqlite:///{tmp_path / 'other.db'}", sampler=sampler, study="b", trials=4)
    assert [t.params for t in a.study.trials] == [t.params for t in b.study.trials]


def test_pareto_rows_are_non_dominated(db_url: str) -> None:
    study = _search(db_url, trials=12).study
    rows = nas.pareto(study)
    assert rows
    for r in rows:
        for other in study.get_trials(states=(TrialState.COMPLETE,)):
            naswot, macs = other.values
            assert not (
                naswot >= r["naswot"]
                and macs <= r["macs"]
                and (naswot, macs) != (r["naswot"], r["macs"])
            )


def test_single_objective_search(db_url: str) -> None:
    result = _search(db_url, objectives=["synflow"], evaluators=["synflow"])
    assert result.study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert len(nas.pareto(result.study)) == 1


def test_an_error_outside_the_candidate_fails_the_trial_and_propagates(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(Store, "put_architecture", broken)
    with pytest.raises(OSError, match="disk full"):
        _search(db_url, trials=3)
    trial, retry = nas.load_study("nas", db_url).trials
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["error"] == "OSError: disk full"
    # Not the candidate's fault: it does not count as run, and it is queued to run again.
    assert trial.user_attrs["stale"] is True
    assert retry.state == TrialState.WAITING and retry.user_attrs["retry_of"] == trial.number
    assert retry.system_attrs["fixed_params"] == trial.params  # how Optuna enqueues


TRAIN = {"name": "train", "settings": {"epochs": 4, "lr": 0.01, "batch_size": 64}}


def test_pruning_produces_pruned_trials(db_url: str) -> None:
    result = _search(
        db_url,
        trials=16,
        sampler="random",
        evaluators=[TRAIN],
        objectives=["maximize:val_acc"],
        pruner="sha",
        dataset={"name": "synthetic", "settings": {"n_train": 256, "n_val": 64}},
    )
    pruned = [t for t in result.study.trials if t.state == TrialState.PRUNED]
    assert pruned and result.summary.pruned == len(pruned)
    for t in pruned:
        assert 1 <= t.user_attrs["pruned_at_epoch"] < 4
        assert len(t.intermediate_values) == t.user_attrs["pruned_at_epoch"]
    with Store(db_url) as store:
        rows = store.list_evaluations(evaluator="train")
    assert sum(1 for r in rows if r.error and r.error.startswith("pruned at epoch")) == len(pruned)


def test_a_nan_loss_gives_a_failed_trial_and_the_search_goes_on(db_url: str) -> None:
    diverge = {"name": "train", "settings": {"epochs": 2, "optimizer": "sgd", "lr": 1e9}}
    result = _search(db_url, trials=2, evaluators=[diverge], objectives=["maximize:val_acc"])
    assert [t.state for t in result.study.trials] == [TrialState.FAIL, TrialState.FAIL]
    assert result.study.trials[0].user_attrs["error"].startswith("diverged: loss")


def test_pruning_a_multi_objective_study_is_refused(db_url: str) -> None:
    with pytest.raises(nas.ConfigError, match="pruner: pruning needs a single objective"):
        _search(db_url, pruner="median")


def test_the_ensemble_objective_is_a_rank_among_the_study_so_far(db_url: str) -> None:
    from nas.evaluators import rank_ensemble

    study = _search(
        db_url, trials=5, evaluators=["ensemble"], objectives=["maximize:ensemble", "bytes"]
    ).study
    keys = ["ensemble.synflow", "ensemble.jacob_cov", "ensemble.snip"]
    rows = [{k: float(t.user_attrs[k]) for k in keys} for t in study.trials]
    assert study.trials[0].values[0] == 1.0  # alone in the study
    for i, trial in enumerate(study.trials):
        assert trial.values[0] == rank_ensemble(rows[: i + 1], keys)[-1]
        assert trial.user_attrs["ensemble"] == trial.values[0]
