"""Pareto plots of a study: interactive (plotly, a self-contained HTML page) or static (PNG).

Both are drawn from one :class:`ParetoData`: every COMPLETE trial as a point on
two metrics, feasible and infeasible ones apart, the study's feasible Pareto
front highlighted and joined by a step line, and a dashed line at the limit of
any constrained metric on an axis. plotly and matplotlib are imported on use.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas._api import _constraints, _feasible, _front, metric_names, metric_value
from nas._config import COST_METRICS
from nas._errors import ConfigError
from nas._render import _cell
from nas.strategies._pareto import non_dominated

if TYPE_CHECKING:
    import plotly.graph_objects as go

FEASIBLE, INFEASIBLE, FRONT = "#4c78a8", "#9d9d9d", "#d62728"
#: Axes whose positive values span more than this ratio are drawn on a log scale.
LOG_SPAN = 100.0


@dataclass(frozen=True)
class Axis:
    """A metric on an axis: its direction ("" if unknown) and whether the scale is log."""

    metric: str
    direction: str
    log: bool

    @property
    def title(self) -> str:
        return f"{self.metric} ({self.direction})" if self.direction else self.metric


@dataclass(frozen=True)
class Point:
    """One COMPLETE trial on the two axes."""

    trial: int
    x: float
    y: float
    feasible: bool
    front: bool
    arch_id: str
    arch: str
    #: the trial's objective values by name
    values: dict[str, float]


@dataclass(frozen=True)
class ParetoData:
    """What a Pareto plot shows; both renderers draw exactly this."""

    study: str
    x: Axis
    y: Axis
    points: list[Point]
    #: the front's points that no other front point dominates on these two axes, by x
    steps: list[tuple[float, float]]
    #: constrained metrics on an axis -> their limit
    limits: dict[str, float]

    @property
    def front(self) -> list[Point]:
        return [p for p in self.points if p.front]


def pareto_data(study: optuna.Study, x: str | None = None, y: str | None = None) -> ParetoData:
    """The points, front and constraint lines of a Pareto plot of ``study``.

    ``y`` defaults to the first maximized objective (else the first objective),
    ``x`` to the first minimized one (else another objective, else a cost metric);
    either may be any metric stored as a trial user attr.

    Example:
        >>> import nas
        >>> from nas._plots import pareto_data
        >>> result = nas.search({"trials": 3, "storage": "sqlite:///example.db"})
        >>> data = pareto_data(result.study)
        >>> data.x.title, data.y.title
        ('macs (minimize)', 'naswot (maximize)')
    """
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not trials:
        raise ConfigError("study", f"study {study.study_name!r} has no complete trial to plot")
    names = metric_names(study)
    objectives = dict(zip(names, (d.name.lower() for d in study.directions), strict=True))
    available = _available(trials, names)
    y_metric = _choose("y", y, available, _default_y(objectives))
    x_metric = _choose("x", x, available, _default_x(objectives, available, y_metric))
    front_ids = {t.number for t in _front(study)}
    points = []
    for t in trials:
        xv, yv = _value(t, x_metric, names), _value(t, y_metric, names)
        if xv is not None and yv is not None:
            points.append(_point(t, xv, yv, names, t.number in front_ids))
    x_axis = _axis(x_metric, objectives, [p.x for p in points])
    y_axis = _axis(y_metric, objectives, [p.y for p in points])
    limits = {m: v for m, v in _constraints(study).items() if m in (x_metric, y_metric)}
    return ParetoData(
        study.study_name, x_axis, y_axis, points, _steps(points, x_axis, y_axis), limits
    )


def pareto_figure(study: optuna.Study, x: str | None = None, y: str | None = None) -> go.Figure:
    """An interactive plotly figure of ``study``'s trials and Pareto front.

    One point per COMPLETE trial (infeasible ones as grey crosses), the feasible
    front in red joined by a step line and labelled by trial number, a dashed
    line at each constrained metric's limit; hovering shows the trial, its
    objective values, arch_id and architecture. Axes: see :func:`pareto_data`.

    Example:
        >>> import nas
        >>> from nas._plots import pareto_figure
        >>> result = nas.search({"trials": 3, "storage": "sqlite:///example.db"})
        >>> figure = pareto_figure(result.study, x="params")
        >>> figure.layout.xaxis.title.text
        'params (minimize)'
    """
    return _plotly(pareto_data(study, x, y))


def write_pareto_plot(
    study: optuna.Study, path: str | Path, x: str | None = None, y: str | None = None
) -> Path:
    """Write the Pareto plot of ``study`` to ``path``: ``.html`` (plotly) or ``.png``.

    The HTML page is self-contained (plotly.js inlined: nothing is fetched when it
    is opened); the PNG is drawn by matplotlib with the same content. Any other
    suffix, a missing directory or a metric no trial has is a :class:`ConfigError`.

    Example:
        >>> import nas
        >>> from nas._plots import write_pareto_plot
        >>> result = nas.search({"trials": 3, "storage": "sqlite:///example.db"})
        >>> write_pareto_plot(result.study, "pareto.png").name
        'pareto.png'
    """
    out = output_path("plot", path, (".html", ".png"))
    data = pareto_data(study, x, y)
    try:
        if out.suffix.lower() == ".html":
            _plotly(data).write_html(out, include_plotlyjs=True, full_html=True)
        else:
            _matplotlib(data, out)
    except OSError as exc:
        raise ConfigError("plot", f"cannot write {out}: {exc.strerror or exc}") from None
    return out


def output_path(field: str, path: str | Path, suffixes: tuple[str, ...]) -> Path:
    """``path`` if it ends in one of ``suffixes`` and its directory exists; else ConfigError."""
    out = Path(path)
    if out.suffix.lower() not in suffixes:
        allowed = " or ".join(suffixes)
        got = repr(out.suffix) if out.suffix else "no suffix"
        raise ConfigError(field, f"{str(out)!r} must end in {allowed}, got {got}")
    if not out.parent.is_dir():
        raise ConfigError(field, f"directory {str(out.parent)!r} of {str(out)!r} does not exist")
    return out


# -- the data -------------------------------------------------------------------------


def _value(trial: FrozenTrial, metric: str, names: list[str]) -> float | None:
    if metric in names and trial.values is not None:
        return metric_value(trial.values[names.index(metric)])
    return metric_value(trial.user_attrs.get(metric))


def _available(trials: list[FrozenTrial], names: list[str]) -> list[str]:
    attrs = {k for t in trials for k, v in t.user_attrs.items() if metric_value(v) is not None}
    return [*names, *sorted(attrs - set(names))]


def _default_y(objectives: dict[str, str]) -> str:
    maximized = [m for m, d in objectives.items() if d == "maximize"]
    return (maximized or list(objectives))[0]


def _default_x(objectives: dict[str, str], available: list[str], y: str) -> str:
    minimized = [m for m, d in objectives.items() if d == "minimize" and m != y]
    others = [m for m in objectives if m != y]
    costs = [m for m in ("macs", *COST_METRICS) if m in available and m != y]
    return (minimized or others or costs or [y])[0]


def _choose(field: str, asked: str | None, available: list[str], default: str) -> str:
    metric = default if asked is None else asked
    if metric not in available:
        raise ConfigError(
            field,
            f"no complete trial has the metric {metric!r}; metrics available: "
            + ", ".join(available),
        )
    return metric


def _direction(metric: str, objectives: dict[str, str]) -> str:
    """An objective's own direction; a cost metric is minimized; else its evaluator's."""
    if metric in objectives:
        return objectives[metric]
    if metric in COST_METRICS:
        return "minimize"
    from nas.evaluators import EVALUATORS

    for _, cls in EVALUATORS.items():
        found = {**cls.directions, **cls.study_metrics}.get(metric)
        if found is not None:
            return str(found)
    return ""


def _axis(metric: str, objectives: dict[str, str], values: list[float]) -> Axis:
    positive = [v for v in values if v > 0]
    log = len(positive) == len(values) > 1 and max(positive) > LOG_SPAN * min(positive)
    return Axis(metric, _direction(metric, objectives), log)


def _point(trial: FrozenTrial, x: float, y: float, names: list[str], front: bool) -> Point:
    values = dict(zip(names, trial.values or [], strict=False))
    attrs = trial.user_attrs
    return Point(
        trial.number,
        x,
        y,
        _feasible(trial),
        front,
        str(attrs.get("arch_id", "")),
        str(attrs.get("arch", "")),
        values,
    )


def _steps(points: list[Point], x: Axis, y: Axis) -> list[tuple[float, float]]:
    """The front points that are also a front on these axes (with 3 objectives, or metrics
    that are not objectives, some are not): the staircase joins those only."""
    front = [(p.x, p.y) for p in points if p.front]
    if not front:
        return []
    directions = [x.direction or "minimize", y.direction or "maximize"]
    keep = non_dominated(front, directions)
    return sorted({front[i] for i in keep})


def _step_shape(x: Axis) -> str:
    """Along a minimized x the staircase goes right then up/down; along a maximized x, first."""
    return "vh" if x.direction == "maximize" else "hv"


def _hover(point: Point) -> str:
    state = "on the front" if point.front else "feasible" if point.feasible else "infeasible"
    lines = [f"<b>trial {point.trial}</b> ({state})"]
    lines += [f"{html.escape(k, quote=False)}: {_cell(v)}" for k, v in point.values.items()]
    lines += [
        f"arch_id: {html.escape(point.arch_id, quote=False)}",
        html.escape(point.arch, quote=False),
    ]
    return "<br>".join(lines)


def _limit_label(metric: str, limit: float) -> str:
    return f"limit: {metric} ≤ {_cell(float(limit))}"


# -- plotly ---------------------------------------------------------------------------


def _plotly(data: ParetoData) -> go.Figure:
    import plotly.graph_objects as go

    fig = go.Figure()
    groups = (
        ("feasible", [p for p in data.points if p.feasible and not p.front]),
        ("infeasible", [p for p in data.points if not p.feasible]),
    )
    for name, points in groups:
        if points:
            fig.add_trace(_plotly_points(name, points))
    if data.steps:
        xs, ys = zip(*data.steps, strict=True)
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="lines",
                line={"shape": _step_shape(data.x), "color": FRONT, "width": 2},
                name="front (step)",
                hoverinfo="skip",
            )
        )
    if data.front:
        fig.add_trace(_plotly_points("Pareto front", data.front, _text_position(data)))
    for metric, limit in data.limits.items():
        line = {"line_dash": "dash", "line_color": "#555", "name": f"constraint {metric}"}
        label = {"annotation_text": _limit_label(metric, limit), "annotation_font_size": 11}
        if metric == data.x.metric:
            fig.add_vline(x=limit, annotation_position="top left", **line, **label)
        if metric == data.y.metric:
            fig.add_hline(y=limit, annotation_position="bottom right", **line, **label)
    fig.update_layout(
        title=html.escape(
            _title(data), quote=False
        ),  # plotly reads tags in text: a name is not markup
        template="plotly_white",
        xaxis={"title": {"text": data.x.title}, "type": "log" if data.x.log else "linear"},
        yaxis={"title": {"text": data.y.title}, "type": "log" if data.y.log else "linear"},
        legend={"orientation": "h", "y": -0.15},
        height=560,
        hoverlabel={"align": "left"},
    )
    return fig


def _text_position(data: ParetoData) -> str:
    """The front's outer side (toward the ideal point), clear of the staircase."""
    vertical = "bottom" if data.y.direction == "minimize" else "top"
    return f"{vertical} {'right' if data.x.direction == 'maximize' else 'left'}"


def _plotly_points(name: str, points: list[Point], text_position: str = "top left") -> Any:
    import plotly.graph_objects as go

    front = name == "Pareto front"
    marker: dict[str, Any] = {"color": FEASIBLE, "size": 7, "opacity": 0.65}
    if name == "infeasible":
        marker = {"color": INFEASIBLE, "size": 7, "symbol": "x"}
    elif front:
        marker = {"color": FRONT, "size": 11, "line": {"color": "white", "width": 1}}
    return go.Scatter(
        x=[p.x for p in points],
        y=[p.y for p in points],
        mode="markers+text" if front else "markers",
        text=_point_labels(points) if front else None,
        textposition=text_position,
        textfont={"size": 10, "color": FRONT},
        marker=marker,
        name=name,
        customdata=[[p.trial, p.arch_id, p.arch] for p in points],
        hovertext=[_hover(p) for p in points],
        hoverinfo="text",
    )


def _point_labels(points: list[Point]) -> list[str]:
    """Each position's label on its first point only: equal points would print over it."""
    labels = _front_labels(points)
    return [labels.pop((p.x, p.y), "") for p in points]


def _title(data: ParetoData) -> str:
    n, feasible = len(data.points), sum(p.feasible for p in data.points)
    return (
        f"Pareto front of study {data.study!r}: {len(data.front)} of {n} "
        f"complete trials ({feasible} feasible)"
    )


# -- matplotlib -----------------------------------------------------------------------


def _matplotlib(data: ParetoData, path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: no global backend, no GUI
    from matplotlib.ticker import EngFormatter

    fig = Figure(figsize=(9, 6), dpi=120, layout="constrained")
    ax = fig.subplots()
    feasible = [p for p in data.points if p.feasible and not p.front]
    infeasible = [p for p in data.points if not p.feasible]
    if feasible:
        ax.scatter(*_xy(feasible), s=22, color=FEASIBLE, alpha=0.6, label="feasible")
    if infeasible:
        ax.scatter(*_xy(infeasible), s=26, color=INFEASIBLE, marker="x", label="infeasible")
    if data.steps:
        xs, ys = zip(*data.steps, strict=True)
        pre = _step_shape(data.x) == "vh"
        ax.step(xs, ys, where="pre" if pre else "post", color=FRONT, linewidth=1.6, zorder=3)
    if data.front:
        ax.scatter(
            *_xy(data.front), s=60, color=FRONT, edgecolor="white", zorder=4, label="Pareto front"
        )
    vertical, horizontal = _text_position(data).split()
    dx, dy = (5 if horizontal == "right" else -5), (-5 if vertical == "bottom" else 5)
    for (px, py), label in _front_labels(data.front).items():
        ax.annotate(
            label,
            (px, py),
            xytext=(dx, dy),
            ha="left" if dx > 0 else "right",
            va="bottom" if dy > 0 else "top",
            textcoords="offset points",
            fontsize=8,
            color=FRONT,
            zorder=5,
        )
    for metric, limit in data.limits.items():
        label = _limit_label(metric, limit)
        if metric == data.x.metric:
            ax.axvline(limit, linestyle="--", color="0.35", linewidth=1.2)
            ax.annotate(
                label,
                (limit, 1),
                xycoords=("data", "axes fraction"),
                xytext=(-4, -4),
                textcoords="offset points",
                ha="right",
                va="top",
                rotation=90,
                fontsize=8,
                color="0.25",
            )
        if metric == data.y.metric:
            ax.axhline(limit, linestyle="--", color="0.35", linewidth=1.2)
            ax.annotate(
                label,
                (1, limit),
                xycoords=("axes fraction", "data"),
                xytext=(-4, 4),
                textcoords="offset points",
                ha="right",
                va="bottom",
                fontsize=8,
                color="0.25",
            )
    ax.set_xscale("log" if data.x.log else "linear")
    ax.set_yscale("log" if data.y.log else "linear")
    for axis, values in ((ax.xaxis, _xy(data.points)[0]), (ax.yaxis, _xy(data.points)[1])):
        if max(map(abs, values), default=0) >= 1e4:  # 250k, 1.5M rather than an 1e6 offset
            axis.set_major_formatter(EngFormatter(sep=""))
    ax.set_xlabel(data.x.title)
    ax.set_ylabel(data.y.title)
    ax.set_title(_title(data), fontsize=11)
    ax.grid(True, color="0.92")
    ax.legend(loc="best", fontsize=9, framealpha=0.9)
    fig.savefig(path, format="png")


def _front_labels(front: list[Point]) -> dict[tuple[float, float], str]:
    """One label per position: equal trials (the same architecture, say) share it."""
    numbers: dict[tuple[float, float], list[int]] = {}
    for p in front:
        numbers.setdefault((p.x, p.y), []).append(p.trial)
    return {xy: ", ".join(f"#{n}" for n in sorted(ns)) for xy, ns in numbers.items()}


def _xy(points: list[Point]) -> tuple[list[float], list[float]]:
    return [p.x for p in points], [p.y for p in points]
