"""``nas export``: the chosen network as files a user can ship.

A directory with ``model.onnx`` (QDQ for the quantized layers, BatchNorm folded),
``arch.json`` (reads back with :func:`nas.search_space.architecture_from_json`),
``weights.safetensors`` when the candidate was trained, ``metrics.json`` (what the
study stored, and the checks made here) and ``README.md``, a model card.

The files are made from what the database holds, not from the artifact
directory: the architecture from the ``architectures`` table, the weights
from the files stored with the training evaluation (the trial's user attr
``weights`` names it). Before anything is written, a trained network is loaded
back from those files and its validation accuracy recomputed, in PyTorch and in
ONNX Runtime; the card reports both next to the stored value.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas._api import (
    _directions,
    _feasible,
    _objective_labels,
    load_study,
    metric_value,
    study_storage_url,
)
from nas._errors import ConfigError, EvaluationError
from nas._render import _cell
from nas.storage import Store
from nas.workers._artifacts import WEIGHTS_ATTR

#: What every export directory holds (``weights.safetensors`` only for trained candidates).
ONNX_FILE, ARCH_FILE, METRICS_FILE, CARD_FILE = (
    "model.onnx",
    "arch.json",
    "metrics.json",
    "README.md",
)


@dataclass
class ExportResult:
    """What :func:`export` wrote, and why that trial."""

    out: Path
    trial: int
    #: How the trial was chosen, in one line (which objective was preferred, among what).
    choice: str
    #: File name -> size in bytes, as written.
    files: dict[str, int]
    #: The stored metrics of the trial (objectives, cost, proxies, training, latency).
    metrics: dict[str, float]
    #: Validation accuracy recomputed from the exported files: ``torch`` and ``onnxruntime``.
    reloaded: dict[str, float] = field(default_factory=dict)
    #: Why there is no ``model.onnx`` (a NAS-Bench-201 cell), if there is none.
    onnx_missing: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "trial": self.trial,
            "choice": self.choice,
            "files": self.files,
            "metrics": self.metrics,
            "reloaded": self.reloaded,
            "onnx_missing": self.onnx_missing,
        }


def export(
    study: optuna.Study | str,
    out: str | Path,
    *,
    trial: int | None = None,
    limits: Mapping[str, float] | None = None,
    prefer: str | None = None,
    storage: str | None = None,
    batch_size: int = 1,
    verify: bool = True,
) -> ExportResult:
    """Write trial ``trial`` of ``study`` — or the best feasible one — to the directory ``out``.

    Without ``trial``, the candidates are the study's feasible COMPLETE trials
    within ``limits`` (metric -> the most it may be, on top of the study's own
    constraints), and the pick is from their Pareto front: the best by
    ``prefer`` (an objective's metric; default the first maximized objective, the
    accuracy or proxy score, else the first one), ties broken by the other
    objectives in order. :attr:`ExportResult.choice` says which.

    ``study`` is a Study or a study name in ``storage`` (default ``sqlite:///nas.db``).
    ``batch_size`` is the ONNX model's fixed batch. With ``verify`` (default) a
    trained network's validation accuracy is recomputed from the written files.

    Raises:
        ConfigError: no such study or trial, a limit on a metric no trial has, no
            trial within the limits, or a trial that is not COMPLETE.

    Example:
        >>> import nas
        >>> result = nas.search({"trials": 4, "storage": "sqlite:///example.db", "study": "e"})
        >>> exported = nas.export(result.study, "exported", limits={"macs": 1e9})
        >>> sorted(exported.files)
        ['README.md', 'arch.json', 'metrics.json', 'model.onnx']
    """
    url = storage or (study_storage_url(study) if isinstance(study, optuna.Study) else None)
    url = url or "sqlite:///nas.db"
    if isinstance(study, str):
        study = load_study(study, url)
    if batch_size < 1:
        raise ConfigError("batch_size", f"must be >= 1, got {batch_size}")
    chosen, choice = choose_trial(study, trial=trial, limits=limits, prefer=prefer)
    with Store(url, create=False) as store:
        bundle = _Bundle.collect(study, chosen, store, batch_size)
    reloaded = bundle.verify() if verify else {}
    directory = _out_dir(out)  # last: an export that fails creates nothing
    files = bundle.write(directory, choice, reloaded)
    return ExportResult(
        directory,
        chosen.number,
        choice,
        files,
        bundle.metrics,
        reloaded,
        bundle.onnx_missing,
    )


def choose_trial(
    study: optuna.Study,
    *,
    trial: int | None = None,
    limits: Mapping[str, float] | None = None,
    prefer: str | None = None,
) -> tuple[FrozenTrial, str]:
    """The trial to export and one line on how it was chosen (see :func:`export`).

    Example:
        >>> import nas
        >>> from nas._export import choose_trial
        >>> result = nas.search({"trials": 4, "storage": "sqlite:///example.db", "study": "c"})
        >>> chosen, why = choose_trial(result.study)
        >>> why.startswith(f"trial {chosen.number}: the best maximize:naswot")
        True
    """
    trials = study.get_trials(deepcopy=False)
    if trial is not None:
        if limits or prefer:
            raise ConfigError("trial", "--trial picks one trial: leave out --best's limits")
        match = [t for t in trials if t.number == trial]
        if not match:
            raise ConfigError(
                "trial", f"study {study.study_name!r} has no trial {trial} (0-{len(trials) - 1})"
            )
        if match[0].state != TrialState.COMPLETE:
            raise ConfigError(
                "trial", f"trial {trial} is {match[0].state.name}, not COMPLETE: nothing to export"
            )
        return match[0], f"trial {trial}: asked for by number"
    limits = dict(limits or {})
    labels = _objective_labels(study)
    names = [label.split(":", 1)[1] for label in labels]
    directions = _directions(study)
    feasible = [t for t in trials if _feasible(t)]
    if not feasible:
        raise ConfigError("best", f"study {study.study_name!r} has no feasible COMPLETE trial")
    for metric in limits:
        if not any(metric in t.user_attrs for t in feasible):
            known = sorted({k for t in feasible for k, v in t.user_attrs.items() if _is_metric(v)})
            raise ConfigError(metric, f"no trial has this metric; metrics: {', '.join(known)}")
    within = [t for t in feasible if all(_within(t, m, v) for m, v in limits.items())]
    if not within:
        closest = {
            m: min(float(t.user_attrs[m]) for t in feasible if _is_metric(t.user_attrs.get(m)))
            for m in limits
        }
        lowest = ", ".join(f"{m} {v:.4g}" for m, v in closest.items())
        raise ConfigError(
            "best", f"no feasible trial within {_limits_text(limits)} (the lowest: {lowest})"
        )
    index = _preferred(names, directions, prefer)
    from nas.strategies._pareto import non_dominated

    front = [within[i] for i in non_dominated([t.values for t in within], directions)]
    order = [index, *(i for i in range(len(names)) if i != index)]
    signs = [-1.0 if directions[i] == "maximize" else 1.0 for i in order]
    best = min(
        front,
        key=lambda t: ([s * t.values[i] for s, i in zip(signs, order, strict=True)], t.number),
    )
    why = "the first maximized objective" if prefer is None else "--prefer"
    if prefer is None and "maximize" not in directions:
        why = "the first objective"
    among = f"{len(front)} trial{'s' if len(front) > 1 else ''} of the feasible front"
    if limits:
        among += f" within {_limits_text(limits)}"
    return best, (
        f"trial {best.number}: the best {labels[index]} ({why}) of {among}; "
        f"{labels[index].split(':')[1]} = {best.values[index]:.6g}"
    )


def _preferred(names: Sequence[str], directions: Sequence[str], prefer: str | None) -> int:
    if prefer is not None:
        if prefer not in names:
            raise ConfigError("prefer", f"not an objective; objectives: {', '.join(names)}")
        return list(names).index(prefer)
    return directions.index("maximize") if "maximize" in directions else 0


def _within(trial: FrozenTrial, metric: str, limit: float) -> bool:
    value = metric_value(trial.user_attrs.get(metric))
    return value is not None and value <= limit


def _is_metric(value: Any) -> bool:
    return metric_value(value) is not None


def _limits_text(limits: Mapping[str, float]) -> str:
    return ", ".join(f"{m}<={v:g}" for m, v in limits.items())


def _out_dir(out: str | Path) -> Path:
    directory = Path(out).expanduser()
    if directory.exists() and not directory.is_dir():
        raise ConfigError("out", f"{out} is a file; give a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError("out", f"cannot create {out} ({exc.strerror})") from None
    return directory


@dataclass
class _Bundle:
    """Everything one export writes, gathered (and checked) before a file is written."""

    study: optuna.Study
    trial: FrozenTrial
    arch: Any
    arch_json: str
    metrics: dict[str, float]
    weights: bytes | None
    onnx: bytes | None
    onnx_missing: str | None
    latency: dict[str, Any] | None
    batch_size: int
    #: The study's data set (None, with the reason in ``data_missing``, where it cannot load).
    data: Any = None
    data_missing: str | None = None

    @classmethod
    def collect(
        cls, study: optuna.Study, trial: FrozenTrial, store: Store, batch_size: int
    ) -> _Bundle:
        from nas.evaluators import onnx_bytes
        from nas.search_space import architecture_from_json

        arch_id = trial.user_attrs.get("arch_id")
        record = store.get_architecture(str(arch_id)) if arch_id else None
        if record is None:
            raise ConfigError(
                "trial", f"trial {trial.number}: architecture {arch_id} is not in the database"
            )
        arch = architecture_from_json(record.canonical_json)
        weights = _stored_weights(trial, store)
        seed = int(study.user_attrs.get("nas.run", {}).get("eval_seed", 0))
        onnx, missing = None, None
        try:
            onnx = onnx_bytes(arch, weights, seed=seed, batch_size=batch_size)
        except EvaluationError as exc:
            missing = str(exc)
        metrics = {k: float(v) for k, v in trial.user_attrs.items() if _is_metric(v)}
        profiles = store.list_latency_profiles(arch_id=arch.arch_id)
        latency = _latency_facts(profiles[-1]) if profiles else None
        return cls(
            study,
            trial,
            arch,
            record.canonical_json,
            metrics,
            weights,
            onnx,
            missing,
            latency,
            batch_size,
            *_dataset(study),
        )

    def verify(self) -> dict[str, float]:
        """Validation accuracy from the files about to be written (trained candidates only)."""
        if self.weights is None or self.data is None:
            return {}
        from nas.evaluators import restore

        data = self.data
        x = data.x_val.reshape(len(data.x_val), *self.arch.input_shape)
        model = restore(self.arch, self.weights)
        import torch

        with torch.no_grad():
            torch_acc = int((model(x).argmax(1) == data.y_val).sum()) / len(data.y_val)
        out = {"val_acc_torch": torch_acc}
        if self.onnx is not None:
            out["val_acc_onnxruntime"] = _onnx_accuracy(
                self.onnx, x.numpy(), data.y_val.numpy(), self.batch_size
            )
        return out

    def write(self, directory: Path, choice: str, reloaded: dict[str, float]) -> dict[str, int]:
        from nas.evaluators import WEIGHTS_FILE

        payload: dict[str, bytes] = {
            ARCH_FILE: (
                json.dumps(json.loads(self.arch_json), indent=2, sort_keys=True) + "\n"
            ).encode()
        }
        if self.onnx is not None:
            payload[ONNX_FILE] = self.onnx
        if self.weights is not None:
            payload[WEIGHTS_FILE] = self.weights
        digests = {name: hashlib.sha256(data).hexdigest() for name, data in payload.items()}
        payload[METRICS_FILE] = (
            json.dumps(self._metrics_json(choice, reloaded, digests), indent=2) + "\n"
        ).encode()
        payload[CARD_FILE] = self._card(choice, reloaded, payload).encode()
        for name, data in payload.items():
            (directory / name).write_bytes(data)
        return {name: len(data) for name, data in payload.items()}

    def _metrics_json(
        self, choice: str, reloaded: dict[str, float], digests: dict[str, str]
    ) -> dict[str, Any]:
        labels = _objective_labels(self.study)
        return {
            "study": self.study.study_name,
            "trial": self.trial.number,
            "choice": choice,
            "arch_id": self.arch.arch_id,
            "arch": self.arch.summary(),
            "objectives": dict(zip(labels, self.trial.values, strict=True)),
            "metrics": self.metrics,
            "constraints": dict(self.study.user_attrs.get("nas.constraints", {})),
            "reloaded": reloaded,
            "latency_profile": self.latency,
            "onnx": {"batch_size": self.batch_size, "missing": self.onnx_missing},
            "input": {
                "shape": list(self.arch.input_shape),
                "normalization": self._normalization_dict(),
            },
            "sha256": digests,
        }

    def _card(self, choice: str, reloaded: dict[str, float], payload: dict[str, bytes]) -> str:
        from nas import __version__
        from nas.evaluators import WEIGHTS_FILE

        attrs = self.study.user_attrs
        space = attrs.get("nas.space", {}).get("name", "?")
        dataset = attrs.get("nas.dataset", {})
        labels = _objective_labels(self.study)
        now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        lines = [
            f"# `{space}` network: trial {self.trial.number} of study `{self.study.study_name}`",
            "",
            f"Exported by nas {__version__} on {now}. Chosen: {choice}.",
            "",
            f"Architecture `{self.arch.arch_id}`: `{self.arch.summary()}`",
            "",
            "## Objectives",
            "",
            "| objective | value |",
            "|---|---|",
            *(f"| {lbl} | {_cell(v)} |" for lbl, v in zip(labels, self.trial.values, strict=True)),
        ]
        constraints = attrs.get("nas.constraints", {})
        if constraints:
            lines += ["", "Constraints of the study (all met): " + _limits_text(constraints) + "."]
        lines += [
            "",
            "## Cost model",
            "",
            "Computed from the architecture at each layer's bits, without running it.",
            "",
            "| params | MACs | BitOps | bytes (weights at their bits) | peak activation bytes |",
            "|---|---|---|---|---|",
            "| "
            + " | ".join(
                _cell(self.metrics.get(k))
                for k in ("params", "macs", "bitops", "bytes", "peak_activation_bytes")
            )
            + " |",
            "",
            "## Latency",
            "",
            *self._latency_lines(),
            "",
            "## Data set",
            "",
            f"`{dataset.get('name', '?')}` with settings"
            f" `{json.dumps(dataset.get('settings', {}))}`;"
            f" input shape {tuple(self.arch.input_shape)}, {self.arch.num_classes} classes.",
            "",
            self._input_line(),
            "",
            "## Training",
            "",
            *self._training_lines(reloaded),
            "",
            "## Files",
            "",
            "| file | bytes | sha256 |",
            "|---|---|---|",
            *(
                f"| `{name}` | {len(data):,} | `{hashlib.sha256(data).hexdigest()[:16]}…` |"
                for name, data in payload.items()
            ),
            "",
            "## Load it",
            "",
            *self._load_lines(WEIGHTS_FILE),
        ]
        return "\n".join(lines) + "\n"

    def _normalization_dict(self) -> dict[str, Any] | None:
        norm = getattr(self.data, "normalization", None)
        return None if norm is None else dict(norm.as_dict())

    def _input_line(self) -> str:
        norm = getattr(self.data, "normalization", None)
        if norm is not None:
            per = "per channel" if len(norm.mean) > 1 else "one value for all"
            mean = ", ".join(f"{v:.6g}" for v in norm.mean)
            std = ", ".join(f"{v:.6g}" for v in norm.std)
            return (
                f"Feed the model `x = (raw - mean) / std` with mean [{mean}] and std [{std}]"
                f" ({per}; raw inputs: {norm.raw}), the train split's statistics, as in the"
                " search (also in `metrics.json`, `input.normalization`)."
            )
        if self.data_missing is not None:
            return f"The data set could not be loaded here ({self.data_missing})."
        return "Feed the model inputs as the data set makes them (`nas.evaluators.load_dataset`)."

    def _latency_lines(self) -> list[str]:
        lines = []
        if "latency_ms" in self.metrics:
            how = "predicted" if self.metrics.get("latency_measured") == 0.0 else "measured"
            lines.append(f"In the search: {_cell(self.metrics['latency_ms'])} ms ({how}).")
        if self.latency is not None:
            hw = self.latency
            lines.append(
                f"Measured on ONNX Runtime {hw['ort_version']} ({hw['provider']}): p10"
                f" {hw['p10_ms']:.4g} ms, median {hw['median_ms']:.4g} ms, p90 {hw['p90_ms']:.4g}"
                f" ms ({hw['runs']} runs in each of {hw['processes']} processes). Hardware"
                f" fingerprint: {hw['cpu']}, {hw['cores']} cores, {hw['threads']} thread(s),"
                f" batch {hw['batch_size']}, {hw['precision']}."
            )
        if not lines:
            lines.append(
                "Not measured in this study: `nas profile model.onnx` measures it on this machine."
            )
        return lines

    def _training_lines(self, reloaded: dict[str, float]) -> list[str]:
        if self.weights is None:
            scored = ", ".join(
                e["name"] for e in self.study.user_attrs.get("nas.evaluators", []) if "name" in e
            )
            return [
                f"Not trained: the candidate was scored by {scored or 'its evaluators'}, so"
                " `model.onnx` holds its seeded initial weights (and uncalibrated activation"
                " ranges). It shows the network's structure and speed; train it before deploying"
                " (`nas search -e train ...` trains candidates and keeps their weights)."
            ]
        settings = _train_settings(self.study)
        lines = [
            "Trained with quantization-aware training at each layer's bits:"
            f" `{json.dumps(settings, sort_keys=True)}`.",
            "",
            "| validation accuracy | value |",
            "|---|---|",
            f"| stored by the search | {_cell(self.metrics.get('val_acc'))} |",
        ]
        if "val_acc_torch" in reloaded:
            lines.append(f"| PyTorch, from these files | {_cell(reloaded['val_acc_torch'])} |")
        if "val_acc_onnxruntime" in reloaded:
            lines.append(
                f"| ONNX Runtime, `model.onnx` | {_cell(reloaded['val_acc_onnxruntime'])} |"
            )
        return lines

    def _load_lines(self, weights_file: str) -> list[str]:
        onnx = [
            "ONNX Runtime:",
            "",
            "```python",
            "import numpy as np, onnxruntime as ort",
            'session = ort.InferenceSession("model.onnx")',
            f"x = np.zeros(({self.batch_size}, {', '.join(map(str, self.arch.input_shape))}),"
            " dtype=np.float32)  # normalized inputs",
            "logits = session.run(None, {session.get_inputs()[0].name: x})[0]",
            "```",
        ]
        torch_lines = [
            "PyTorch (with nas installed):",
            "",
            "```python",
            "from pathlib import Path",
            "",
            *(["from safetensors.torch import load_file"] if self.weights is not None else []),
            "from nas.search_space import architecture_from_json",
            "",
            'arch = architecture_from_json(Path("arch.json").read_text())',
        ]
        if self.weights is not None:
            torch_lines += [
                "model = arch.build()",
                f'model.load_state_dict(load_file("{weights_file}"))',
                "model.eval()",
            ]
        else:
            torch_lines += ["model = arch.build()  # untrained: train it first"]
        torch_lines.append("```")
        if self.onnx is None:
            onnx = [f"No ONNX model: {self.onnx_missing}."]
        return [*onnx, "", *torch_lines]


def _dataset(study: optuna.Study) -> tuple[Any, str | None]:
    """The study's data set, or why it cannot be loaded here (a directory on another machine)."""
    from nas._errors import NasError
    from nas.evaluators import load_dataset

    entry = study.user_attrs.get("nas.dataset", {})
    try:
        return load_dataset(entry["name"], **entry.get("settings", {})), None
    except (NasError, KeyError) as exc:
        return None, str(exc)


def _stored_weights(trial: FrozenTrial, store: Store) -> bytes | None:
    """The trial's trained weights, stored with its training evaluation (user attr ``weights``)."""
    from nas.evaluators import WEIGHTS_FILE

    key = trial.user_attrs.get(WEIGHTS_ATTR)
    if not key:
        return None
    evaluator, _, fingerprint = str(key).partition("/")
    files = store.get_evaluation_files(str(trial.user_attrs["arch_id"]), evaluator, fingerprint)
    return files.get(WEIGHTS_FILE)


def _latency_facts(record: Any) -> dict[str, Any]:
    keys = [
        "cpu",
        "cores",
        "ort_version",
        "provider",
        "threads",
        "batch_size",
        "precision",
        "p10_ms",
        "median_ms",
        "p90_ms",
        "runs",
        "processes",
    ]
    return {k: getattr(record, k) for k in keys}


def _train_settings(study: optuna.Study) -> dict[str, Any]:
    from nas.evaluators import TrainSettings

    for entry in study.user_attrs.get("nas.evaluators", []):
        if entry.get("name") == "train":
            return TrainSettings(**entry.get("settings", {})).model_dump(mode="json")
    return {}


def _onnx_accuracy(model: bytes, x: Any, y: Any, batch_size: int) -> float:
    """Accuracy of the ONNX model on ``x`` (padded to whole batches), on ORT's CPU provider."""
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    correct = 0
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size]
        n = len(batch)
        if n < batch_size:
            batch = np.concatenate(
                [batch, np.zeros((batch_size - n, *batch.shape[1:]), batch.dtype)]
            )
        logits = session.run(None, {name: batch})[0][:n]
        correct += int((logits.argmax(1) == y[start : start + n]).sum())
    return correct / len(x)
