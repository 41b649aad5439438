"""The evaluator contract, the context an evaluation runs in, and the registry.

Proxies, training and latency measurement are all :class:`Evaluator` subclasses,
registered by name in :data:`EVALUATORS` and listed by ``nas evaluators``.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

import torch
from pydantic import BaseModel

from nas._errors import ConfigError, EvaluationError
from nas._registry import Registry
from nas.evaluators._datasets import Dataset
from nas.evaluators._settings import NoSettings, sha256_json, validate_settings

if TYPE_CHECKING:
    from nas.search_space import AnyArchitecture

Direction = Literal["maximize", "minimize"]


#: ``reporter(step, metrics) -> stop``: intermediate results of a long evaluation; True asks
#: the evaluation to stop (it then raises :class:`nas.Pruned`).
Reporter = Callable[[int, Mapping[str, float]], bool]


@dataclass(frozen=True)
class EvalContext:
    """Where and on what an evaluation runs: the data, the seed, the device, the batch size.

    ``reporter`` receives intermediate results of evaluations that have them
    (training, once per epoch); it is not part of any fingerprint.
    """

    dataset: Dataset
    seed: int = 0
    device: str = "cpu"
    batch_size: int = 64
    reporter: Reporter | None = None

    def report(self, step: int, metrics: Mapping[str, float]) -> bool:
        """Hand ``metrics`` at ``step`` to the reporter; True means: stop now."""
        return self.reporter is not None and bool(self.reporter(step, metrics))

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError("batch_size", f"must be >= 1, but got {self.batch_size}")

    def batch(
        self, n: int | None = None, shape: Sequence[int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` train samples (default ``batch_size``, at most all) chosen by ``seed``.

        ``shape`` reshapes each sample (e.g. ``arch.input_shape``); its element
        count must match the data's, else :class:`ConfigError`.
        """
        x, y = self.dataset.x_train, self.dataset.y_train
        gen = torch.Generator().manual_seed(self.seed)
        index = torch.randperm(len(y), generator=gen)[: self.batch_size if n is None else n]
        xb = x[index]
        if shape is not None:
            xb = xb.reshape(len(index), *_check_numel(tuple(shape), self.dataset.input_shape))
        return xb.to(self.device), y[index].to(self.device)


def _check_numel(shape: tuple[int, ...], data_shape: tuple[int, ...]) -> tuple[int, ...]:
    if math.prod(shape) != math.prod(data_shape):
        raise ConfigError(
            "input_shape",
            f"the architecture's input {shape} must hold as many values as the data's "
            f"{data_shape}, but got {math.prod(shape)} != {math.prod(data_shape)}",
        )
    return shape


class Evaluator(abc.ABC):
    """What a candidate is worth: a pure function of (arch, settings, data, seed).

    Contract:
      * The result depends only on the architecture, :meth:`settings`, the
        context's data set and seed (and, for evaluators with ``uses_batch``,
        its batch size); running it twice gives the same numbers on the same
        device. An evaluator knows nothing of Optuna or SQL and keeps no state
        between calls, but it may reseed torch's global RNG (the proxies do), so
        run concurrent evaluations in separate processes, not threads.
      * :meth:`__call__` returns exactly the keys in ``metrics``, each a float;
        ``directions`` says which way each one is better.
      * A candidate that cannot be scored raises :class:`EvaluationError` with a
        one-line reason (a NaN result is one); a bad setting raises
        :class:`ConfigError` at construction.

    Subclasses set the class attributes, optionally a pydantic ``Settings``
    model, and implement :meth:`_evaluate`.
    """

    name: ClassVar[str]
    version: ClassVar[int] = 1
    description: ClassVar[str]
    metrics: ClassVar[tuple[str, ...]]
    directions: ClassVar[dict[str, Direction]]
    uses_batch: ClassVar[bool] = False
    Settings: ClassVar[type[BaseModel]] = NoSettings
    #: Metrics whose value depends on the study's other candidates (a rank, say). The
    #: driver computes them with :meth:`study_values` when it tells Optuna; none here.
    study_metrics: ClassVar[dict[str, Direction]] = {}

    def __init__(self, **settings: Any) -> None:
        self._settings = validate_settings(self.Settings, settings, f"evaluator {self.name!r}")

    def settings(self) -> dict[str, Any]:
        """The settings, defaults included, as JSON-able values."""
        return self._settings.model_dump(mode="json")

    def fingerprint(self, ctx: EvalContext) -> str:
        """SHA-256 hex of what the result depends on; equal fingerprints mean equal results."""
        payload: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "settings": self.settings(),
            "dataset": ctx.dataset.fingerprint,
            "seed": ctx.seed,
        }
        if self.uses_batch:  # the batch, hence the score, changes with its size
            payload["batch_size"] = ctx.batch_size
        return sha256_json(payload)

    #: Names of the files an evaluation makes (:meth:`run`), e.g. the trained weights.
    files: ClassVar[tuple[str, ...]] = ()

    def __call__(self, arch: AnyArchitecture, ctx: EvalContext) -> dict[str, float]:
        """Score ``arch``; raises :class:`EvaluationError` on a NaN or a missing metric."""
        return self.run(arch, ctx)[0]

    def run(
        self, arch: AnyArchitecture, ctx: EvalContext
    ) -> tuple[dict[str, float], dict[str, bytes]]:
        """The metrics of ``arch`` and the files the evaluation made (named as in :attr:`files`).

        Training gives ``weights.safetensors``; the proxies give no file. The
        driver stores the files with the evaluation, so whoever reuses it has them.
        """
        with torch.enable_grad():  # gradient proxies must work under a caller's no_grad
            scores, files = self._evaluate_with_files(arch, ctx)
        result = {key: float(value) for key, value in scores.items()}
        if set(result) != set(self.metrics):
            raise EvaluationError(
                f"{self.name}: returned metrics {sorted(result)}, expected {list(self.metrics)}"
            )
        for key, value in result.items():
            if math.isnan(value):
                raise EvaluationError(f"{key}: score is NaN")
        return result, files

    def study_values(
        self, own: Mapping[str, float], population: Sequence[Mapping[str, float]]
    ) -> dict[str, float]:
        """The ``study_metrics`` of ``own`` (this candidate's metrics) among ``population``.

        ``population`` holds the :attr:`metrics` of the study's completed candidates,
        this one excluded. An optional hook: evaluators without study metrics return {}.
        """
        return {}

    #: Metrics that are estimates the driver may have :meth:`confirm`-ed by a measurement
    #: (latency in mode auto: predicted, measured when it decides the front or a limit).
    confirm_metrics: tuple[str, ...] = ()
    #: How near a constraint's limit (as a fraction of it) an estimate counts as deciding.
    confirm_margin: float = 0.1

    def confirm(self, arch: AnyArchitecture, ctx: EvalContext) -> dict[str, float]:
        """The measured values of :attr:`confirm_metrics` (only evaluators that have any)."""
        raise NotImplementedError(f"{self.name} has no metrics to confirm")

    def attach_store(self, store: Any) -> None:
        """Hook: an evaluator that keeps its own records (latency) gets the study's store.

        The store is an object with methods (``nas.storage.Store``); no SQL here.
        Called once by the driver before the first evaluation; a no-op by default.
        """
        del store

    @abc.abstractmethod
    def _evaluate(self, arch: AnyArchitecture, ctx: EvalContext) -> dict[str, float]:
        """The scores of ``arch``, keyed by the names in ``metrics``."""

    def _evaluate_with_files(
        self, arch: AnyArchitecture, ctx: EvalContext
    ) -> tuple[dict[str, float], dict[str, bytes]]:
        """The scores and the files; evaluators that make files (training) override this."""
        return self._evaluate(arch, ctx), {}


EVALUATORS: Registry[type[Evaluator]] = Registry("evaluator")
E = TypeVar("E", bound=type[Evaluator])


def register_evaluator(cls: E) -> E:
    """Class decorator registering ``cls`` under ``cls.name``, after checking its metrics."""
    missing = [m for m in cls.metrics if cls.directions.get(m) not in ("maximize", "minimize")]
    if missing or set(cls.directions) != set(cls.metrics):
        raise ValueError(
            f"evaluator {cls.name!r}: every metric needs a direction 'maximize' or 'minimize', "
            f"but got metrics={cls.metrics} directions={cls.directions}"
        )
    EVALUATORS.register(cls.name, cls)
    return cls


def get_evaluator(name: str, **settings: Any) -> Evaluator:
    """An instance of the evaluator registered as ``name``.

    Example:
        >>> from nas.evaluators import get_evaluator
        >>> get_evaluator("synflow").metrics
        ('synflow',)
    """
    return EVALUATORS.get(name, field="evaluator")(**settings)


def evaluator_infos() -> list[dict[str, Any]]:
    """Name, description, metrics and their directions of every registered evaluator."""
    return [
        {
            "name": name,
            "description": cls.description,
            "metrics": cls.metrics,
            "directions": dict(cls.directions),
        }
        for name, cls in EVALUATORS.items()
    ]
