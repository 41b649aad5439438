"""Zero-cost warm-up: score random candidates with a proxy, enqueue the best as first trials.

Abdelfattah et al. 2021 ("Zero-cost proxies for lightweight NAS", section 5) warm up a
search by scoring many random candidates with a zero-cost proxy and starting from the
best: here the top ``k`` become the study's first trials through
``study.enqueue_trial``, so every sampler (evolution included) sees them as its own
trials, and the dashboard and resume work as for any other trial.

The proxy's evaluations go through the same storage cache as the search's
(:func:`~nas.workers._scheduler.evaluate_cached`): a candidate scored once is never
scored again, in any study, and when the proxy is also one of the search's evaluators
(same settings) the enqueued trials reuse their warm-up evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nas.search_space import sample_random
from nas.workers._local import LocalWorker, Worker
from nas.workers._scheduler import evaluate_cached

if TYPE_CHECKING:
    import optuna

    from nas.evaluators import EvalContext, Evaluator
    from nas.search_space import AnyArchitecture, AnySpace
    from nas.storage import Store

#: ``progress(done, total)`` after each candidate is scored (or found in storage).
Progress = Callable[[int, int], None]


def warmup_metric(evaluator: Evaluator | type[Evaluator]) -> str | None:
    """The one metric a warm-up ranks by (larger is better), or None if there is none.

    A study metric (the ensemble's rank) if the evaluator declares exactly one, to
    maximize; else its only metric, if that one is maximized.

    Example:
        >>> from nas.evaluators import EVALUATORS
        >>> warmup_metric(EVALUATORS.get("synflow")), warmup_metric(EVALUATORS.get("ensemble"))
        ('synflow', 'ensemble')
        >>> warmup_metric(EVALUATORS.get("latency")) is None
        True
    """
    if evaluator.study_metrics:
        [(name, direction), *more] = evaluator.study_metrics.items()
        return name if not more and direction == "maximize" else None
    if len(evaluator.metrics) == 1 and evaluator.directions[evaluator.metrics[0]] == "maximize":
        return evaluator.metrics[0]
    return None


@dataclass
class WarmupResult:
    """What a warm-up did: candidates drawn, scored, failed, and the ones enqueued."""

    proxy: str
    metric: str
    n: int
    scored: int = 0
    failed: int = 0
    evaluations_run: int = 0
    evaluations_reused: int = 0
    #: The enqueued candidates, best first (the study's first trials, in this order).
    enqueued: list[AnyArchitecture] = field(default_factory=list)
    #: The ranking score of each enqueued candidate, in the same order.
    scores: list[float] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """The study user attr ``nas.warmup``."""
        return {
            "n": self.n,
            "proxy": self.proxy,
            "metric": self.metric,
            "enqueued": [a.arch_id for a in self.enqueued],
        }


def warm_up(
    study: optuna.Study,
    space: AnySpace,
    proxy: Evaluator,
    ctx: EvalContext,
    store: Store,
    *,
    n: int,
    top: int,
    seed: int = 0,
    worker: Worker | None = None,
    progress: Progress | None = None,
) -> WarmupResult:
    """Score ``n`` random candidates (seeded by ``seed``) with ``proxy``; enqueue the ``top``.

    Duplicates among the ``n`` are scored once; candidates whose evaluation fails
    are dropped. The best ``top`` by :func:`warmup_metric` (ties: in sampling
    order) are enqueued best first, each with user attrs ``warmup_rank`` (1 is the
    best) and ``warmup_score``, and the study records ``nas.warmup``. ``proxy``
    must have a :func:`warmup_metric` (the plan checks it).
    """
    metric = warmup_metric(proxy)
    if metric is None:
        raise ValueError(f"evaluator {proxy.name!r} has no single metric to maximize")
    worker = worker or LocalWorker()
    result = WarmupResult(proxy.name, metric, n)
    distinct: dict[str, AnyArchitecture] = {}
    for arch in sample_random(space, n, seed):
        distinct.setdefault(arch.arch_id, arch)
    candidates = list(distinct.values())
    fingerprint = proxy.fingerprint(ctx)
    scored: list[tuple[AnyArchitecture, dict[str, float]]] = []
    for i, arch in enumerate(candidates):
        store.put_architecture(arch.arch_id, space.name, arch.to_json(), **arch.cost().as_dict())
        outcome, reused = evaluate_cached(store, worker, arch, proxy, ctx, fingerprint)
        result.evaluations_reused += reused
        result.evaluations_run += not reused
        if outcome.metrics is None or outcome.pruned_at is not None:
            result.failed += 1
        else:
            scored.append((arch, outcome.metrics))
        if progress is not None:
            progress(i + 1, len(candidates))
    result.scored = len(scored)
    scores = proxy_scores(proxy, metric, [m for _, m in scored])
    best = sorted(range(len(scored)), key=lambda i: -scores[i])[:top]
    for rank, i in enumerate(best, start=1):
        arch = scored[i][0]
        attrs = {"warmup_rank": rank, "warmup_score": scores[i]}
        study.enqueue_trial(space.to_params(arch), user_attrs=attrs)
        result.enqueued.append(arch)
        result.scores.append(scores[i])
    study.set_user_attr("nas.warmup", result.record())
    return result


def proxy_scores(
    proxy: Evaluator, metric: str, metrics: Sequence[Mapping[str, float]]
) -> list[float]:
    """Each candidate's ``metric``; a study metric is computed among the candidates scored.

    The ensemble's rank of a candidate is therefore its rank within the warm-up's
    own population, the only one there is before the first trial.
    """
    if metric not in proxy.study_metrics:
        return [float(m[metric]) for m in metrics]
    return [
        float(proxy.study_values(own, [*metrics[:i], *metrics[i + 1 :]])[metric])
        for i, own in enumerate(metrics)
    ]
