"""Every registered sampler through the same API checks (as Optuna's own sampler tests do).

Each sampler runs on a conditional toy space and on the built-in ``cnn-small`` space, with
one and two objectives; the same seed must give the same params, whatever the storage.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest

from nas import ConfigError
from nas.search_space import get_space
from nas.strategies import SAMPLERS, make_sampler

optuna.logging.set_verbosity(optuna.logging.WARNING)

Objective = Callable[[optuna.Trial], Any]
N_TRIALS = 25
CNN = get_space("cnn-small")


def _toy(trial: optuna.Trial) -> tuple[float, float]:
    """A conditional space of every distribution kind: depth decides the layers' params."""
    total, cost = 0.0, 0.0
    for j in range(trial.suggest_int("depth", 1, 3)):
        kind = trial.suggest_categorical(f"l{j}.type", ["conv", "pool", "skip"])
        if kind == "conv":
            width = trial.suggest_categorical(f"l{j}.width", [8, 16, 32])
            bits = trial.suggest_int(f"l{j}.bits", 2, 8, step=2)
            total += width * bits / 64
            cost += width * bits
        elif kind == "pool":
            total += trial.suggest_float(f"l{j}.scale", 0.1, 10.0, log=True)
    total += trial.suggest_float("lr", 0.0, 1.0)
    return total, cost


def _cnn(trial: optuna.Trial) -> tuple[float, float]:
    cost = CNN.sample(trial).cost()
    return float(cost.params), float(cost.bitops)


SPACES: dict[str, Callable[[optuna.Trial], tuple[float, float]]] = {"toy": _toy, "cnn": _cnn}


def _objective(space: str, n_objectives: int) -> Objective:
    def objective(trial: optuna.Trial) -> Any:
        values = SPACES[space](trial)
        return values[0] if n_objectives == 1 else values

    return objective


def _directions(n_objectives: int) -> list[str]:
    return ["maximize", "minimize"][:n_objectives]


def _sampler(name: str, seed: int, n_objectives: int) -> optuna.samplers.BaseSampler:
    try:
        return make_sampler(name, seed, n_objectives)
    except ConfigError as exc:  # the only way a sampler may decline: one clear line
        assert exc.field == "sampler" and name in str(exc) and "\n" not in str(exc)
        pytest.skip(f"{name} declines {n_objectives} objectives: {exc}")


def _run(name: str, n_objectives: int, space: str, seed: int, **study: Any) -> optuna.Study:
    s = optuna.create_study(
        directions=_directions(n_objectives), sampler=_sampler(name, seed, n_objectives), **study
    )
    s.optimize(_objective(space, n_objectives), n_trials=N_TRIALS)
    return s


def _params(study: optuna.Study) -> list[dict[str, Any]]:
    return [t.params for t in study.get_trials(deepcopy=False)]


def _check_within_distributions(study: optuna.Study) -> None:
    for t in study.get_trials(deepcopy=False):
        for name, value in t.params.items():
            dist = t.distributions[name]
            assert dist._contains(dist.to_internal_repr(value)), (t.number, name, value, dist)


@pytest.fixture(params=SAMPLERS.names())
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=[1, 2], ids=["1obj", "2obj"])
def n_objectives(request: pytest.FixtureRequest) -> int:
    return int(request.param)


@pytest.mark.parametrize("space", ["toy", "cnn"])
def test_same_seed_same_params_within_their_distributions(
    name: str, n_objectives: int, space: str
) -> None:
    first = _run(name, n_objectives, space, seed=0)
    assert len(first.trials) == N_TRIALS
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in first.trials)
    _check_within_distributions(first)
    assert _params(_run(name, n_objectives, space, seed=0)) == _params(first)
    assert _params(_run(name, n_objectives, space, seed=1)) != _params(first)


def test_several_trials_in_flight(name: str, n_objectives: int) -> None:
    """Ask three, tell them in another order; the same seed still gives the same params."""

    def run() -> list[dict[str, Any]]:
        study = optuna.create_study(
            directions=_directions(n_objectives), sampler=_sampler(name, 0, n_objectives)
        )
        objective = _objective("toy", n_objectives)
        for _ in range(N_TRIALS // 3):
            trials = [study.ask() for _ in range(3)]
            values = [objective(t) for t in trials]
            for i in (2, 0, 1):
                study.tell(trials[i], values[i])
        _check_within_distributions(study)
        assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
        return _params(study)

    assert run() == run()


def test_rdb_storage_gives_what_memory_gives(name: str, n_objectives: int, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'samplers.db'}"
    stored = _run(name, n_objectives, "toy", seed=0, storage=url, study_name="s")
    again = optuna.load_study(study_name="s", storage=url)
    assert len(again.trials) == N_TRIALS
    assert _params(again) == _params(_run(name, n_objectives, "toy", seed=0)) == _params(stored)


def test_every_sampler_is_described() -> None:
    for key, info in SAMPLERS.items():
        assert info.description, key
    assert {"random", "tpe", "nsga2", "nsga3", "gp", "evolution"} <= set(SAMPLERS.names())


def test_options_are_checked_by_name_and_value() -> None:
    sampler = make_sampler("evolution", 0, 1, {"population_size": 10, "sample_size": 3})
    assert (sampler.population_size, sampler.sample_size) == (10, 3)  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="takes no option 'sample_size'; allowed: population"):
        make_sampler("nsga2", 0, 2, {"sample_size": 3})
    with pytest.raises(ConfigError, match=r"allowed: \(none\)") as info:
        make_sampler("tpe", 0, 1, {"population_size": 3})
    assert info.value.field == "sampler_options.population_size"
    with pytest.raises(ConfigError, match="sample_size <= population_size") as info:
        make_sampler("evolution", 0, 1, {"population_size": 3, "sample_size": 5})
    assert info.value.field == "sampler_options"
