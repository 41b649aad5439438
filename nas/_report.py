"""One self-contained HTML page about a study: what was searched, how it went, what it found.

Sections: the search's settings; trials by state; the best value of each
objective so far, by trial and by wall time; the Pareto plot and table; each
proxy's rank correlation with trained accuracy; the latency predictor's error
against measurements; failures and pruning. A section without data says so in
one line. plotly.js is inlined once, so the page opens offline; every string
from the study is escaped.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas._api import _constraints, _feasible, metric_value, pareto, study_storage_url
from nas._errors import ConfigError, NasError
from nas._plots import output_path, pareto_figure
from nas._render import _cell

if TYPE_CHECKING:
    import plotly.graph_objects as go

#: The metric that proxies are meant to predict.
TARGET = "val_acc"


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    body: str


@dataclass(frozen=True)
class LatencyPair:
    """One architecture of the study with a measured and a predicted latency (ms)."""

    trials: tuple[int, ...]
    arch_id: str
    fingerprint: str
    predicted_ms: float
    measured_ms: float
    #: whether the search itself used the measurement (user attr latency_measured)
    measured_in_search: bool

    @property
    def rel_error(self) -> float:
        return self.predicted_ms / self.measured_ms - 1


def write_report(study: optuna.Study, path: str | Path, storage: str | None = None) -> Path:
    """Write one self-contained HTML report of ``study`` to ``path`` (``.html``).

    ``storage`` is the database URL, for the stored latency profiles and
    predictors; by default the study's own. A path with another suffix or in a
    missing directory is a :class:`ConfigError`.

    Example:
        >>> import nas
        >>> from nas._report import write_report
        >>> result = nas.search({"trials": 3, "storage": "sqlite:///example.db"})
        >>> write_report(result.study, "report.html").name
        'report.html'
    """
    out = output_path("out", path, (".html", ".htm"))
    url = storage or study_storage_url(study)
    sections = [
        _settings(study),
        _counts(study),
        _progress(study),
        _pareto(study),
        _correlations(study),
        _latency(study, url),
        _failures(study),
    ]
    try:
        out.write_text(_page(study.study_name, sections), encoding="utf-8")
    except OSError as exc:
        raise ConfigError("out", f"cannot write {out}: {exc.strerror or exc}") from None
    return out


def proxy_correlations(study: optuna.Study) -> list[dict[str, Any]]:
    """Spearman's rho of each proxy metric with ``val_acc`` over the COMPLETE trials with both.

    A proxy metric is any metric of an evaluator whose every metric is maximized
    (a score, "larger is better": the zero-cost proxies, the ensemble, the params
    and macs baselines). ``rho`` is None with fewer than 3 trials or a constant.

    Example:
        >>> import nas
        >>> from nas._report import proxy_correlations
        >>> result = nas.search({"trials": 4, "storage": "sqlite:///example.db", "study": "c",
        ...     "evaluators": ["synflow", {"name": "train", "settings": {"epochs": 1}}],
        ...     "objectives": ["maximize:val_acc", "macs"]})
        >>> [row["proxy"] for row in proxy_correlations(result.study)]
        ['macs', 'params', 'synflow']
    """
    from scipy.stats import spearmanr

    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    with_target = [t for t in trials if metric_value(t.user_attrs.get(TARGET)) is not None]
    rows = []
    for proxy in _proxy_metrics():
        pairs = [
            (metric_value(t.user_attrs.get(proxy)), float(t.user_attrs[TARGET]))
            for t in with_target
        ]
        xs = [p for p, _ in pairs if p is not None]
        ys = [a for p, a in pairs if p is not None]
        if not xs:
            continue
        rho = p_value = None
        if len(xs) >= 3 and len(set(xs)) > 1 and len(set(ys)) > 1:
            result = spearmanr(xs, ys)
            rho, p_value = float(result.statistic), float(result.pvalue)
        rows.append({"proxy": proxy, "trials": len(xs), "spearman": rho, "p_value": p_value})
    return rows


def latency_pairs(study: optuna.Study, storage: str) -> tuple[list[LatencyPair], str]:
    """Predicted against measured latency of the study's architectures; or why there are none.

    For the study's ``latency`` evaluator settings, every stored predictor whose
    fingerprint they give (on the predictor's own hardware) predicts each of the
    study's architectures that has a measured profile on that fingerprint; the
    prediction is recomputed from the stored kernel table and correction, and
    nothing is measured (a kernel not in the table uses the predictor's fallback).
    """
    configs = [e for e in study.user_attrs.get("nas.evaluators", []) if e.get("name") == "latency"]
    if not configs:
        return [], "the study has no latency evaluator"
    from nas.evaluators._latency import Hardware, LatencySettings
    from nas.storage import Store

    try:
        settings = LatencySettings(**configs[0].get("settings", {}))
    except Exception as exc:  # pydantic's: a provider this machine lacks, say
        return [], f"its latency settings cannot be read here ({_first_line(exc)})"
    by_arch = _trials_by_arch(study)
    pairs: list[LatencyPair] = []
    with Store(storage, create=False) as store:
        for record in store.list_latency_predictors():
            hardware = Hardware(**record.hardware)  # type: ignore[arg-type]
            if settings.fingerprint(hardware) == record.fingerprint:
                pairs += _pairs_of(store, record, settings, by_arch)
    if not pairs:
        return [], (
            "no trial has both a prediction and a measurement on the same fingerprint "
            "(no stored predictor for its settings, or none of its architectures measured)"
        )
    return pairs, ""


# -- sections -------------------------------------------------------------------------


def _settings(study: optuna.Study) -> Section:
    attrs = study.user_attrs
    if "nas.space" not in attrs:
        return Section("settings", "Search settings", _none("not created by nas search"))
    space = attrs["nas.space"]
    rows: list[dict[str, Any]] = [
        {"setting": "space", "value": f"{space.get('name')}: {space.get('description', '')}"},
        {"setting": "dataset", "value": _named(attrs.get("nas.dataset", {}))},
        {"setting": "evaluators", "value": "; ".join(map(_named, attrs.get("nas.evaluators", [])))},
        {"setting": "objectives", "value": ", ".join(attrs.get("nas.objectives", []))},
        {"setting": "constraints", "value": _limits(_constraints(study)) or "none"},
    ]
    for key, value in attrs.get("nas.run", {}).items():
        rows.append({"setting": key, "value": _json(value)})
    if "nas.warmup" in attrs:
        w = attrs["nas.warmup"]
        text = f"the best {len(w.get('enqueued', []))} of {w.get('n')} by {w.get('proxy')}"
        rows.append({"setting": "warm-up", "value": text})
    return Section("settings", "Search settings", _table(rows))


def _counts(study: optuna.Study) -> Section:
    trials = study.get_trials(deepcopy=False)
    states = ("complete", "pruned", "fail", "running", "waiting")
    counts = {state: 0 for state in states}
    for t in trials:
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    rows: list[dict[str, Any]] = [{"state": k, "trials": v} for k, v in counts.items()]
    rows.append({"state": "total", "trials": len(trials)})
    if _constraints(study):
        rows.append(
            {"state": "feasible (complete, within every limit)", "trials": _n_feasible(trials)}
        )
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    ends = [t.datetime_complete for t in trials if t.datetime_complete is not None]
    body = _table(rows)
    if starts and ends:
        seconds = (max(ends) - min(starts)).total_seconds()
        body += _p(
            f"from {min(starts):%Y-%m-%d %H:%M:%S} to {max(ends):%Y-%m-%d %H:%M:%S} "
            f"({seconds:,.1f} s)"
        )
    return Section("trials", "Trials", body)


def _progress(study: optuna.Study) -> Section:
    title = "Best so far"
    trials = [t for t in study.get_trials(deepcopy=False) if _feasible(t)]
    if not trials:
        return Section("progress", title, _none("no feasible complete trial yet"))
    starts = [t.datetime_start for t in study.get_trials(deepcopy=False) if t.datetime_start]
    figure = _progress_figure(study, trials, min(starts) if starts else None)
    note = _p(
        "The best value of each objective among the feasible complete trials so far, "
        "by trial number and by wall time since the first trial started."
    )
    return Section("progress", title, note + _figure(figure))


def _pareto(study: optuna.Study) -> Section:
    title = "Pareto front"
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return Section("pareto", title, _none("no complete trial"))
    rows = pareto(study)
    table = _table(rows) if rows else _none("no feasible trial: the front is empty")
    return Section("pareto", title, _figure(pareto_figure(study)) + table)


def _correlations(study: optuna.Study) -> Section:
    title = f"Proxies against trained accuracy ({TARGET})"
    rows = proxy_correlations(study)
    if not rows:
        return Section("proxies", title, _none(f"no trial has both {TARGET} and a proxy metric"))
    shown = [
        {
            "proxy": r["proxy"],
            "trials": r["trials"],
            "Spearman rho": "-" if r["spearman"] is None else f"{r['spearman']:.4f}",
            "p-value": "-" if r["p_value"] is None else f"{r['p_value']:.3g}",
        }
        for r in rows
    ]
    note = _p(
        "Rank correlation over this study's complete trials with both values; the "
        "sampler chose these candidates, so they are not a random sample of the space. "
        "'-': fewer than 3 trials, or a constant."
    )
    return Section("proxies", title, note + _table(shown, key="proxy"))


def _latency(study: optuna.Study, storage: str | None) -> Section:
    title = "Latency predictor against measurements"
    if storage is None:
        return Section("latency", title, _none("the study's database URL is unknown"))
    try:
        pairs, why = latency_pairs(study, storage)
    except NasError as exc:
        pairs, why = [], str(exc)
    if not pairs:
        return Section("latency", title, _none(why))
    errors = [abs(p.rel_error) for p in pairs]
    summary = _p(
        f"{len(pairs)} architectures; mean |error| {100 * sum(errors) / len(errors):.1f}%, "
        f"max {100 * max(errors):.1f}% (prediction recomputed from the stored predictor, "
        "measurement from latency_profiles, same fingerprint)."
    )
    rows = [
        {
            "trials": ", ".join(map(str, p.trials)),
            "arch_id": p.arch_id,
            "fingerprint": p.fingerprint[:16],
            "predicted ms": f"{p.predicted_ms:.4g}",
            "measured ms": f"{p.measured_ms:.4g}",
            "error": f"{100 * p.rel_error:+.1f}%",
            "search used": "measured" if p.measured_in_search else "predicted",
        }
        for p in pairs
    ]
    return Section("latency", title, summary + _figure(_latency_figure(pairs)) + _table(rows))


def _failures(study: optuna.Study) -> Section:
    failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    pruned = study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
    reasons: dict[str, list[int]] = {}
    for t in failed:
        reasons.setdefault(str(t.user_attrs.get("error", "unknown")), []).append(t.number)
    rows = [
        {"reason": reason, "count": len(numbers), "trials": _numbers(numbers)}
        for reason, numbers in sorted(reasons.items(), key=lambda kv: -len(kv[1]))
    ]
    body = _table(rows) if rows else _none("no trial failed")
    if pruned:
        steps: dict[str, int] = {}
        for t in pruned:
            step = "-" if t.last_step is None else str(t.last_step)
            steps[step] = steps.get(step, 0) + 1
        at = ", ".join(f"{n} at step {s}" for s, n in sorted(steps.items()))
        body += _p(f"pruned: {len(pruned)} ({at}); trials {_numbers([t.number for t in pruned])}")
    else:
        body += _none("no trial was pruned")
    return Section("failures", "Failures and pruning", body)


# -- figures --------------------------------------------------------------------------


def _progress_figure(
    study: optuna.Study, trials: list[FrozenTrial], start: datetime | None
) -> go.Figure:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = study.metric_names or [f"objective{i}" for i in range(len(study.directions))]
    directions = [d.name.lower() for d in study.directions]
    fig = make_subplots(
        rows=len(names),
        cols=2,
        shared_yaxes=True,
        horizontal_spacing=0.04,
        vertical_spacing=0.12 / max(1, len(names) - 1) if len(names) > 1 else 0.1,
        column_titles=["by trial number", "by wall time"],
    )
    by_number = sorted(trials, key=lambda t: t.number)
    by_time = sorted(trials, key=lambda t: t.datetime_complete or datetime.max)
    for row, (name, direction) in enumerate(zip(names, directions, strict=True), start=1):
        i = row - 1
        for col, ordered in ((1, by_number), (2, by_time)):
            xs = [t.number for t in ordered] if col == 1 else _seconds(ordered, start)
            values = [t.values[i] for t in ordered]
            best = _running_best(values, direction)
            hover = [f"trial {t.number}" for t in ordered]
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=values,
                    mode="markers",
                    hovertext=hover,
                    marker={"size": 5, "color": "#9ecae1"},
                    showlegend=False,
                    name=name,
                ),
                row=row,
                col=col,
            )
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=best,
                    mode="lines",
                    line={"shape": "hv", "color": "#d62728"},
                    name=f"best {name}",
                    showlegend=False,
                ),
                row=row,
                col=col,
            )
        fig.update_yaxes(
            title_text=html.escape(f"{name} ({direction})", quote=False), row=row, col=1
        )
    fig.update_xaxes(title_text="trial", row=len(names), col=1)
    fig.update_xaxes(title_text="seconds since the first trial started", row=len(names), col=2)
    fig.update_layout(
        template="plotly_white", height=260 * len(names) + 80, margin={"t": 40, "b": 40}
    )
    return fig


def _latency_figure(pairs: list[LatencyPair]) -> go.Figure:
    import plotly.graph_objects as go

    measured = [p.measured_ms for p in pairs]
    predicted = [p.predicted_ms for p in pairs]
    low, high = min(measured + predicted), max(measured + predicted)
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[low, high],
            y=[low, high],
            mode="lines",
            name="predicted = measured",
            line={"dash": "dash", "color": "#777"},
        )
    )
    hover = [
        f"trials {', '.join(map(str, p.trials))}<br>{p.arch_id}<br>error {100 * p.rel_error:+.1f}%"
        for p in pairs
    ]
    fig.add_trace(
        go.Scatter(
            x=measured,
            y=predicted,
            mode="markers",
            name="architectures",
            hovertext=hover,
            hoverinfo="text",
            marker={"size": 8, "color": "#4c78a8"},
        )
    )
    fig.update_layout(
        template="plotly_white",
        xaxis_title="measured latency_ms (p10)",
        yaxis_title="predicted latency_ms",
        height=420,
    )
    return fig


def _seconds(trials: Sequence[FrozenTrial], start: datetime | None) -> list[float]:
    return [
        (t.datetime_complete - start).total_seconds()
        if start is not None and t.datetime_complete is not None
        else math.nan
        for t in trials
    ]


def _running_best(values: Sequence[float], direction: str) -> list[float]:
    pick = max if direction == "maximize" else min
    out: list[float] = []
    for v in values:
        out.append(v if not out else pick(out[-1], v))
    return out


# -- the latency pairs ----------------------------------------------------------------


def _trials_by_arch(study: optuna.Study) -> dict[str, list[FrozenTrial]]:
    by_arch: dict[str, list[FrozenTrial]] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if "arch_id" in t.user_attrs:
            by_arch.setdefault(str(t.user_attrs["arch_id"]), []).append(t)
    return by_arch


def _pairs_of(
    store: Any, record: Any, settings: Any, by_arch: dict[str, list[FrozenTrial]]
) -> list[LatencyPair]:
    from nas.evaluators._predictor import LatencyPredictor
    from nas.search_space import Architecture

    fingerprint = record.fingerprint
    table = {h: k.ms for h, k in store.get_latency_kernels(fingerprint).items()}
    model = record.model
    predictor = LatencyPredictor(
        settings, table, model["correction"], model.get("fallback", {}), measure_missing=False
    )
    pairs = []
    for arch_id, trials in by_arch.items():
        profile = store.get_latency_profile(arch_id, fingerprint)
        stored = store.get_architecture(arch_id)
        if profile is None or stored is None:
            continue
        try:
            predicted = predictor.predict(Architecture.from_json(stored.canonical_json))
        except (KeyError, ValueError):  # a kernel with no fit, or not a layer architecture
            continue
        pairs.append(
            LatencyPair(
                tuple(t.number for t in trials),
                arch_id,
                fingerprint,
                predicted,
                profile.p10_ms,
                any(t.user_attrs.get("latency_measured") == 1.0 for t in trials),
            )
        )
    return pairs


# -- HTML -----------------------------------------------------------------------------


_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; color: #222; max-width: 1180px; margin: 0 auto;
       padding: 0 20px 40px; }
h1 { font-size: 22px; margin: 24px 0 4px; } h2 { font-size: 18px; margin-top: 36px;
     border-bottom: 1px solid #ddd; padding-bottom: 4px; }
nav a { margin-right: 14px; } table { border-collapse: collapse; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
p.none { color: #777; font-style: italic; }
"""


def _page(name: str, sections: list[Section]) -> str:
    from plotly.offline import get_plotlyjs

    nav = " ".join(f'<a href="#{s.key}">{html.escape(s.title)}</a>' for s in sections)
    body = "\n".join(
        f'<section id="{s.key}">\n<h2>{html.escape(s.title)}</h2>\n{s.body}\n</section>'
        for s in sections
    )
    title = html.escape(f"nas report: study {name!r}")
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{title}</title>\n<style>{_CSS}</style>\n"
        f'<script type="text/javascript">{get_plotlyjs()}</script>\n</head>\n<body>\n'
        f"<h1>{title}</h1>\n<nav>{nav}</nav>\n{body}\n</body>\n</html>\n"
    )


def _figure(fig: go.Figure) -> str:
    return str(fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False}))


def _table(rows: Sequence[dict[str, Any]], key: str | None = None) -> str:
    """Rows as an HTML table (columns: every key, in first-seen order), every cell escaped;
    with ``key``, each row carries ``data-key`` with that column's value."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    lines = []
    for row in rows:
        cells = "".join(_td(row.get(c)) for c in columns)
        attr = f' data-key="{html.escape(str(row[key]))}"' if key else ""
        lines.append(f"<tr{attr}>{cells}</tr>")
    return f"<table>\n<tr>{head}</tr>\n" + "\n".join(lines) + "\n</table>"


def _td(value: Any) -> str:
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    css = ' class="num"' if numeric else ""
    return f"<td{css}>{html.escape(_cell(value))}</td>"


def _p(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"


def _none(text: str) -> str:
    return f'<p class="none">{html.escape(text)}.</p>'


def _named(entry: dict[str, Any]) -> str:
    settings = entry.get("settings") or {}
    return f"{entry.get('name')} {_json(settings)}" if settings else str(entry.get("name"))


def _json(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _limits(limits: dict[str, float]) -> str:
    return ", ".join(f"{m} ≤ {_cell(float(v))}" for m, v in limits.items())


def _numbers(numbers: list[int], most: int = 20) -> str:
    shown = ", ".join(map(str, numbers[:most]))
    return shown + (f", ... ({len(numbers) - most} more)" if len(numbers) > most else "")


def _n_feasible(trials: Sequence[FrozenTrial]) -> int:
    return sum(_feasible(t) for t in trials)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _proxy_metrics() -> list[str]:
    """The metrics of every evaluator that only scores (each of its metrics is maximized)."""
    from nas.evaluators import EVALUATORS

    metrics: set[str] = set()
    for _, cls in EVALUATORS.items():
        directions = {**cls.directions, **cls.study_metrics}
        if directions and all(d == "maximize" for d in directions.values()):
            metrics.update(directions)
    return sorted(metrics - {TARGET})
