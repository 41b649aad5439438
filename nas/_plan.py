"""From a :class:`SearchConfig` to objects, checked before anything is written.

Order matters: every name, file and value is validated first, the database
URL last, so bad input leaves the database untouched.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas._config import Objective, SearchConfig, resolve_constraints, resolve_objectives
from nas._errors import ConfigError, UnknownNameError
from nas.evaluators import EVALUATORS, EvalContext, Evaluator, get_evaluator, load_dataset
from nas.search_space import AnySpace, get_space
from nas.search_space._load import space_from_dict
from nas.storage import check_url
from nas.strategies import PRUNERS, make_sampler
from nas.workers._backends import WorkerSetup
from nas.workers._warmup import warmup_metric


@dataclass(frozen=True)
class Plan:
    """A search ready to run: the config and the objects it names."""

    config: SearchConfig
    space: AnySpace
    evaluators: tuple[Evaluator, ...]
    context: EvalContext
    objectives: tuple[Objective, ...]
    #: metric -> the most it may be (sorted by metric); a candidate over a limit is infeasible.
    constraints: dict[str, float] = field(default_factory=dict)
    #: The warm-up's proxy (the search's own instance if it is one of its evaluators).
    warmup_proxy: Evaluator | None = None
    #: How many warm-up candidates become the first trials (0: no warm-up).
    warmup_top: int = 0
    #: Where evaluations run: local, process or ray.
    backend: str = "local"

    def max_epochs(self) -> int | None:
        """The most epochs any evaluator trains for (a pruner's resource), if any trains."""
        epochs = [int(e.settings()["epochs"]) for e in self.evaluators if "epochs" in e.settings()]
        return max(epochs, default=None)

    def worker_setup(self) -> WorkerSetup:
        """What a worker process or Ray actor needs to build this plan's evaluators."""
        cfg = self.config
        threads = None
        if self.backend == "process":
            cpus = cfg.cpus_per_trial or max(1, (os.cpu_count() or 1) // cfg.parallel)
            threads = max(1, int(cpus))
        return WorkerSetup(
            cfg.dataset.name,
            dict(cfg.dataset.settings),
            tuple((type(ev), ev.settings()) for ev in self.evaluators),
            seed=self.context.seed,
            device=self.config.device if self.backend == "ray" else self.context.device,
            batch_size=self.context.batch_size,
            storage=cfg.storage,
            threads=threads,
        )

    def run_attrs(self) -> dict[str, Any]:
        """How the study was first run, for ``nas worker`` to join it the same way (unchecked)."""
        cfg = self.config
        return {
            "nas.run": {
                "sampler": cfg.sampler,
                "sampler_options": dict(cfg.sampler_options),
                "pruner": cfg.pruner,
                "seed": cfg.seed,
                "eval_seed": cfg.eval_seed,
                "batch_size": cfg.batch_size,
                "device": cfg.device,
                "trials": cfg.trials,
            }
        }

    def study_attrs(self) -> dict[str, Any]:
        """What a study records of the search that created it (checked when it is resumed)."""
        return {
            "nas.space": self.space.model_dump(mode="json"),
            "nas.dataset": self.config.dataset.model_dump(mode="json"),
            "nas.evaluators": [e.model_dump(mode="json") for e in self.config.evaluators],
            "nas.objectives": [f"{o.direction}:{o.metric}" for o in self.objectives],
            "nas.constraints": dict(self.constraints),
        }


def make_plan(config: SearchConfig) -> Plan:
    """Resolve and check every part of ``config``; the first bad one raises ConfigError."""
    space = (
        space_from_dict(config.space, "space")
        if isinstance(config.space, dict)
        else get_space(config.space)
    )
    data = load_dataset(config.dataset.name, **config.dataset.settings)
    space = space.for_data(data.input_shape, data.num_classes)
    evaluators = tuple(_evaluator(i, e.name, e.settings) for i, e in enumerate(config.evaluators))
    directions: dict[str, Any] = {}
    for ev in evaluators:
        directions.update(ev.directions)
        directions.update(ev.study_metrics)
    objectives = tuple(resolve_objectives(config, directions))
    constraints = resolve_constraints(config, directions)
    # Built once here so that a bad name or option fails before anything is written.
    make_sampler(config.sampler, config.seed, len(objectives), config.sampler_options)
    PRUNERS.get(config.pruner, "pruner")
    if config.pruner != "none" and len(objectives) != 1:
        raise ConfigError(
            "pruner",
            f"pruning needs a single objective (Optuna keeps intermediate values only then), "
            f"got {len(objectives)}; use --pruner none",
        )
    proxy = _warmup_proxy(config, evaluators)
    top = _warmup_top(config)
    backend = _backend(config)
    # On Ray the workers' GPUs count, not the driver's: they resolve the device themselves.
    device = _device(config.device, required=backend != "ray")
    context = EvalContext(data, seed=config.eval_seed, device=device, batch_size=config.batch_size)
    _check_artifacts(config.artifacts)
    check_url(config.storage)
    return Plan(
        config,
        space,
        evaluators,
        context,
        objectives,
        constraints,
        proxy if top else None,
        top,
        backend,
    )


def _check_artifacts(value: str) -> None:
    """An artifact directory must be a directory, or creatable where it is to be."""
    if value in ("auto", "none"):
        return
    path = Path(value).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise ConfigError("artifacts", f"{value} is a file; give a directory, auto or none")
    parent = next(p for p in (path, *path.parents) if p.exists())
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise ConfigError("artifacts", f"cannot create {value}: {parent} is not writable")


def _backend(config: SearchConfig) -> str:
    """The backend the config asks for (or implies), checked against its other options."""
    backend = config.backend or ("local" if config.parallel == 1 else "process")
    if backend == "local" and config.parallel > 1:
        raise ConfigError(
            "parallel",
            f"the local backend runs one evaluation at a time, but got parallel="
            f"{config.parallel}; use backend process or ray",
        )
    if backend != "local" and config.pruner != "none":
        raise ConfigError(
            "pruner",
            f"pruning needs the local backend (intermediate values stay in the driver's "
            f"process), but got backend {backend!r}; use --pruner none or --backend local",
        )
    if backend != "ray":
        for name, value, unset in (
            ("gpus_per_trial", config.gpus_per_trial, 0.0),
            ("ray_address", config.ray_address, None),
        ):
            if value != unset:
                raise ConfigError(name, f"needs backend ray, but got backend {backend!r}")
    if backend == "ray" and importlib.util.find_spec("ray") is None:
        raise ConfigError("backend", "ray is not installed; pip install 'ray>=2.60'")
    return backend


def _evaluator(i: int, name: str, settings: dict[str, Any]) -> Evaluator:
    try:
        return get_evaluator(name, **settings)
    except ConfigError as exc:
        field = ".".join(p for p in (f"evaluators.{i}", exc.field) if p)
        raise ConfigError(field, exc.message) from None


def _warmup_proxy(config: SearchConfig, evaluators: tuple[Evaluator, ...]) -> Evaluator:
    """The proxy by name: the search's own instance if it has one (its settings), else a default.

    Sharing the search's settings shares the fingerprint, so enqueued trials reuse the scores.
    """
    name = config.warmup_proxy
    known = [n for n, cls in EVALUATORS.items() if warmup_metric(cls) is not None]
    if name not in EVALUATORS:
        raise UnknownNameError("warm-up proxy", name, known, "warmup_proxy")
    proxy = next((e for e in evaluators if e.name == name), None) or get_evaluator(name)
    if warmup_metric(proxy) is None:
        raise ConfigError(
            "warmup_proxy",
            f"{name!r} has no single metric to maximize (it gives {', '.join(proxy.metrics)}); "
            f"known: {', '.join(known)}",
        )
    return proxy


def _warmup_top(config: SearchConfig) -> int:
    """How many warm-up candidates to enqueue; they count toward ``trials``."""
    n, top = config.warmup, config.warmup_top
    if top is None:
        return min(n, 10, config.trials)
    if n == 0:
        raise ConfigError("warmup_top", f"needs warmup > 0 to choose from, but got {top=}")
    if top > n or top > config.trials:
        raise ConfigError(
            "warmup_top",
            f"`warmup_top <= warmup` and `warmup_top <= trials` must hold (the enqueued "
            f"trials count toward trials), but got ({top=}, warmup={n}, trials={config.trials})",
        )
    return top


def _device(device: str, required: bool = True) -> str:
    """The torch device for ``device`` here; ``cuda`` without one is an error if ``required``.

    Not required, the driver's own work (a warm-up, a confirmation) falls back to the CPU.
    """
    import torch

    if device == "auto" or (device == "cuda" and not required):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "'cuda' requested but no CUDA device is available; use cpu")
    return device
