from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from cli_helpers import assert_rejected, run_cli

import nas
from nas._plan import make_plan
from nas.evaluators import EVALUATORS, EvalContext, Evaluator, get_evaluator, register_evaluator
from nas.evaluators._ensemble import rank_ensemble
from nas.search_space import Architecture, sample_random
from nas.storage import Store

WARM = {
    "trials": 6,
    "seed": 3,
    "sampler": "random",
    "warmup": 14,
    "warmup_top": 4,
    # the params proxy builds no network: the trials themselves are fast
    "evaluators": ["params"],
    "objectives": ["maximize:params", "macs"],
}


def _search(db_url: str, **overrides: Any) -> nas.SearchResult:
    return nas.search({**WARM, "storage": db_url, **overrides})


def _distinct(result: nas.SearchResult) -> list[Architecture]:
    """The warm-up's candidates, recomputed: the config's draw, duplicates removed."""
    cfg = result.plan.config
    seen: dict[str, Architecture] = {}
    for arch in sample_random(result.plan.space, cfg.warmup, seed=cfg.seed):
        seen.setdefault(arch.arch_id, arch)
    return list(seen.values())


def _top(scores: list[float], archs: list[Architecture], k: int) -> list[str]:
    order = sorted(range(len(archs)), key=lambda i: -scores[i])  # ties: in drawing order
    return [archs[i].arch_id for i in order[:k]]


@pytest.mark.parametrize("proxy", ["params", "naswot"])
def test_warmup_enqueues_the_top_k_and_they_are_the_first_trials(db_url: str, proxy: str) -> None:
    result = _search(db_url, warmup_proxy=proxy)
    archs = _distinct(result)
    ctx = result.plan.context
    scores = [get_evaluator(proxy)(a, ctx)[proxy] for a in archs]
    expected = _top(scores, archs, 4)
    warm = result.warmup
    assert warm is not None and (warm.n, warm.scored, warm.failed) == (14, len(archs), 0)
    assert [a.arch_id for a in warm.enqueued] == expected
    assert warm.scores == sorted(warm.scores, reverse=True)
    trials = result.study.trials
    assert [t.user_attrs["arch_id"] for t in trials[:4]] == expected
    assert [t.user_attrs["warmup_rank"] for t in trials[:4]] == [1, 2, 3, 4]
    assert all("warmup_rank" not in t.user_attrs for t in trials[4:])
    assert len(trials) == 6  # the enqueued trials count toward `trials`
    assert result.study.user_attrs["nas.warmup"] == {
        "n": 14,
        "proxy": proxy,
        "metric": proxy,
        "enqueued": expected,
    }


def test_a_proxy_the_search_uses_is_reused_by_the_enqueued_trials(db_url: str) -> None:
    result = _search(db_url, warmup_proxy="params")  # one of the search's evaluators
    assert result.summary.outcomes[0].reused == 1 and result.summary.outcomes[0].evaluated == 0
    assert result.summary.evaluations_reused >= 4


def test_proxy_evaluations_are_stored_and_reused_by_another_study(db_url: str) -> None:
    first = _search(db_url, study="a", warmup_proxy="synflow")
    n = first.warmup.scored if first.warmup else 0
    assert first.warmup is not None and first.warmup.evaluations_run == n
    with Store(db_url) as store:
        stored = len(store.list_evaluations(evaluator="synflow"))
    assert stored == n
    second = _search(db_url, study="b", warmup_proxy="synflow")
    assert second.warmup is not None
    assert (second.warmup.evaluations_run, second.warmup.evaluations_reused) == (0, n)
    assert second.warmup.enqueued == first.warmup.enqueued
    with Store(db_url) as store:
        assert len(store.list_evaluations(evaluator="synflow")) == stored


def test_a_continued_study_is_not_warmed_up_again(db_url: str) -> None:
    first = _search(db_url, warmup_proxy="params")
    again = _search(db_url, warmup_proxy="params", warmup=20, warmup_top=2)
    assert again.warmup is None
    trials = again.study.trials
    assert len(trials) == 12
    assert sum("warmup_rank" in t.user_attrs for t in trials) == 4
    assert again.study.user_attrs["nas.warmup"] == first.study.user_attrs["nas.warmup"]


def test_a_study_without_warmup_is_not_warmed_up_later(db_url: str) -> None:
    _search(db_url, warmup=0, warmup_top=None)
    again = _search(db_url, warmup_proxy="params")
    assert again.warmup is None and "nas.warmup" not in again.study.user_attrs


def test_ensemble_warmup_ranks_within_the_warmup_population(db_url: str) -> None:
    result = _search(db_url, warmup=8, warmup_top=3, trials=3, warmup_proxy="ensemble")
    archs = _distinct(result)
    proxy = get_evaluator("ensemble")
    scores = [proxy(a, result.plan.context) for a in archs]
    ranks = rank_ensemble(scores, proxy.metrics, proxy.directions)
    warm = result.warmup
    assert warm is not None and warm.metric == "ensemble"
    assert [a.arch_id for a in warm.enqueued] == _top(ranks, archs, 3)
    assert warm.scores == sorted(ranks, reverse=True)[:3]


@pytest.mark.parametrize(
    ("warmup", "trials", "top"), [(30, 12, 10), (30, 3, 3), (5, 12, 5), (0, 12, 0)]
)
def test_default_top_is_at_most_ten_and_at_most_trials(warmup: int, trials: int, top: int) -> None:
    plan = make_plan(nas.SearchConfig(warmup=warmup, trials=trials, warmup_proxy="params"))
    assert plan.warmup_top == top
    assert (plan.warmup_proxy is None) == (top == 0)


class _Picky(Evaluator):
    """Fails on architectures whose arch_id is odd (about half of them)."""

    name = "test-picky"
    description = "test proxy that fails on odd arch_ids"
    metrics = ("picky",)
    directions: ClassVar[dict[str, Any]] = {"picky": "maximize"}

    def _evaluate(self, arch: Architecture, ctx: EvalContext) -> dict[str, float]:
        if _odd(arch):
            raise nas.EvaluationError("odd")
        return {"picky": float(arch.cost().params)}


def _odd(arch: Architecture) -> bool:
    return int(arch.arch_id, 16) % 2 == 1


@pytest.fixture
def picky() -> Iterator[None]:
    register_evaluator(_Picky)
    yield
    EVALUATORS.unregister(_Picky.name)


@pytest.mark.usefixtures("picky")
def test_failed_candidates_are_dropped(db_url: str) -> None:
    result = _search(db_url, warmup=20, warmup_top=6, warmup_proxy="test-picky")
    archs = _distinct(result)
    odd = [a for a in archs if _odd(a)]
    assert 0 < len(odd) < len(archs) - 6, "the seed should draw both kinds"
    warm = result.warmup
    assert warm is not None and warm.failed == len(odd) and warm.scored == len(archs) - len(odd)
    assert not {a.arch_id for a in warm.enqueued} & {a.arch_id for a in odd}


# --- the command line ------------------------------------------------------------------


def test_cli_warmup_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["search", "-n", "4", "-q", "--warmup", "10", "--warmup-proxy", "params"]
    code, _, err = run_cli([*args, "--warmup-top", "2"], capsys)
    assert code == 0, err
    assert "warm-up: 10 of 10 candidates scored by params" in err and "best 2 were" in err
    code, out, _ = run_cli(["status", "nas", "-f", "json"], capsys)
    assert json.loads(out)["warmup"] == "2 best of 10 by params"
    study = nas.load_study("nas")
    assert [t.user_attrs.get("warmup_rank") for t in study.trials] == [1, 2, None, None]
    code, _, err = run_cli(args, capsys)
    assert code == 0 and "warm-up skipped: study 'nas' already had trials" in err


def test_cli_shows_the_warmup_progress(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(
        ["search", "-n", "2", "--warmup", "5", "--warmup-proxy", "params"], capsys
    )
    assert code == 0 and "warm-up params" in err


BAD_WARMUP = {
    "negative": (["--warmup", "-1"], "warmup: Input should be greater than or equal to 0"),
    "not a number": (["--warmup", "ten"], "warmup: expected a whole number, got 'ten'"),
    "unknown proxy": (
        ["--warmup", "5", "--warmup-proxy", "nope"],
        "warmup_proxy: unknown warm-up proxy 'nope'; known: synflow",
    ),
    "proxy to minimize": (
        ["--warmup", "5", "--warmup-proxy", "latency"],
        "warmup_proxy: 'latency' has no single metric to maximize",
    ),
    "top over n": (["--warmup", "5", "--warmup-top", "6"], "`warmup_top <= warmup`"),
    "top over trials": (["--warmup", "20", "--warmup-top", "8", "-n", "5"], "trials=5"),
    "top without warmup": (["--warmup-top", "3"], "warmup_top: needs warmup > 0"),
    "top zero": (["--warmup", "5", "--warmup-top", "0"], "warmup_top: Input should be"),
    "top not a number": (["--warmup", "5", "--warmup-top", "x"], "warmup_top: expected a whole"),
}


def test_bad_warmup_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(["search", "-n", "2", "-q"], capsys)
    assert code == 0, err
    db = tmp_path / "nas.db"
    assert_rejected(BAD_WARMUP, ["search", "-q"], db, capsys)
    code, _, _ = run_cli(
        ["search", "--warmup", "5", "--warmup-proxy", "nope", "--study", "x"], capsys
    )
    assert code == 2 and [s["study"] for s in nas.studies()] == ["nas"]
