"""``nas profile``: measure one model's latency, or calibrate the latency predictor.

Both read and write the same tables the search uses (``latency_profiles``,
``latency_kernels``, ``latency_predictors``), so a model profiled here is not
measured again by a search on the same fingerprint, and the reverse.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nas._errors import ConfigError
from nas.evaluators._latency import (
    LatencySettings,
    Profile,
    export_arch,
    kernel_paths,
    onnx_model_id,
    profile_from_record,
    profile_onnx,
    run_protocol,
    store_profile,
    summarize,
)
from nas.search_space._load import pydantic_error


def latency_settings(**fields: Any) -> LatencySettings:
    """Protocol settings from keyword arguments (``None`` keeps the default)."""
    from pydantic import ValidationError

    try:
        return LatencySettings(**{k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        raise pydantic_error(exc) from None


def profile(
    target: str | Path,
    settings: LatencySettings | None = None,
    *,
    storage: str | None = None,
    remeasure: bool = False,
) -> dict[str, Any]:
    """The latency of an architecture (``.json``) or an ONNX model (``.onnx``).

    With ``storage``, a profile already stored for this fingerprint is returned
    as it is (``cached: true``) and a new one is stored.

    Example:
        >>> from nas._profile import latency_settings
        >>> profile("arch.json", latency_settings(processes=1))["latency_ms"]  # doctest: +SKIP
        0.0123
    """
    settings = settings or LatencySettings()
    path = Path(target)
    if not path.is_file():
        raise ConfigError("model", f"no such file: {str(path)!r} (an ARCH.json or MODEL.onnx)")
    model, arch_id, layers, arch_text = _read_target(path, settings)
    from nas.storage import Store

    store = Store(storage) if storage else None
    hardware = settings.hardware()
    fingerprint = settings.fingerprint(hardware)
    try:
        cached = None
        if store is not None and not remeasure:
            record = store.get_latency_profile(arch_id, fingerprint)
            cached = profile_from_record(record) if record is not None else None
        if cached is not None:
            result = cached
        else:
            if model is None:
                exported = _export(arch_text, settings)
                model, layers = exported.serialize(), exported.layers
            result = profile_onnx(model, settings, layers)
            if store is not None:
                if arch_text is not None:
                    _put_arch(store, arch_text)
                store_profile(store, arch_id, fingerprint, hardware, result, replace=remeasure)
    finally:
        if store is not None:
            store.close()
    return _row(arch_id, fingerprint, hardware.as_dict(), result, cached is not None)


def _read_target(
    path: Path, settings: LatencySettings
) -> tuple[bytes | None, str, tuple[Any, ...], str | None]:
    if path.suffix.lower() == ".onnx":
        model = path.read_bytes()
        return model, onnx_model_id(model), (), None
    from nas.search_space import Architecture

    text = path.read_text(encoding="utf-8")
    try:
        json.loads(text)
    except ValueError as exc:
        raise ConfigError(path.name, f"not JSON ({exc}); expected an architecture") from None
    try:
        arch = Architecture.from_json(text)
    except Exception as exc:  # pydantic or JSON errors: one line naming the file
        from pydantic import ValidationError

        if isinstance(exc, ValidationError):
            err = pydantic_error(exc)
            raise ConfigError(err.field, f"{err.message} (in {path.name})") from None
        raise ConfigError(path.name, f"not an architecture JSON: {exc}") from None
    return None, arch.arch_id, (), arch.to_json()


def _export(arch_text: str | None, settings: LatencySettings) -> Any:
    from nas.search_space import Architecture

    assert arch_text is not None
    return export_arch(Architecture.from_json(arch_text), settings)


def _put_arch(store: Any, arch_text: str) -> None:
    from nas.search_space import Architecture

    arch = Architecture.from_json(arch_text)
    store.put_architecture(arch.arch_id, "profile", arch.to_json(), **arch.cost().as_dict())


def _row(
    arch_id: str, fingerprint: str, hardware: dict[str, Any], p: Profile, cached: bool
) -> dict[str, Any]:
    eight = [k for k in p.kernel_paths if k["wbits"] == 8 and k["abits"] == 8]
    return {
        "model": arch_id,
        "latency_ms": p.p10_ms,
        "p10_ms": p.p10_ms,
        "median_ms": p.median_ms,
        "p90_ms": p.p90_ms,
        "reference_ratio": p.reference_ratio,
        "runs": p.runs,
        "processes": p.processes,
        "seconds": p.seconds,
        "cached": cached,
        "int8_layers": f"{sum(k['path'] == 'int8' for k in eight)}/{len(eight)}",
        "fingerprint": fingerprint[:16],
        **hardware,
        "kernel_paths": p.kernel_paths,
    }


def calibrate(
    space: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    settings: LatencySettings | None = None,
    *,
    storage: str,
    models: int = 20,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Build this machine's latency predictor from ``models`` sampled architectures.

    Every distinct kernel of the sample is timed once, the sample is measured with
    the full protocol, and the correction is fitted on it; all of it is stored.
    """
    from nas.evaluators._predictor import LatencyPredictor
    from nas.search_space import SearchSpace, get_space, sample_random
    from nas.storage import Store

    settings = settings or LatencySettings()
    if models < 3:
        raise ConfigError("models", f"must be >= 3 to fit the correction, but got {models}")
    sp = get_space(space).for_data(input_shape, num_classes)
    if not isinstance(sp, SearchSpace):
        raise ConfigError("space", f"{space!r} is a cell space; latency needs a layer space")
    archs = sample_random(sp, models, seed=seed)
    say = progress or (lambda _: None)
    start = time.perf_counter()
    with Store(storage) as store:
        predictor = LatencyPredictor.load(store, settings) or LatencyPredictor(
            settings, {}, store=store
        )
        predictor.store = store
        say(f"timing the kernels of {models} architectures")
        new = predictor.fill(archs)
        say(f"measuring {models} whole models ({settings.processes} processes each)")
        measured = _measure_whole(archs, settings, store)
        fit = predictor.fit(archs, measured)
        predictor.save(store, n_models=models)
    return {
        "fingerprint": settings.fingerprint()[:16],
        "space": space,
        "models": models,
        "kernels": len(predictor.table),
        "new_kernels": new,
        "correction": list(predictor.correction),
        "fit_mean_abs_rel_error": fit["mean_abs_rel_error"],
        "fit_max_abs_rel_error": fit["max_abs_rel_error"],
        "seconds": time.perf_counter() - start,
    }


def _measure_whole(archs: list[Any], settings: LatencySettings, store: Any) -> list[float]:
    """Whole-model p10 latencies: stored profiles reused, the rest measured and stored."""
    fingerprint = settings.fingerprint()
    hardware = settings.hardware()
    out: dict[int, float] = {}
    todo = []
    for i, arch in enumerate(archs):
        record = store.get_latency_profile(arch.arch_id, fingerprint)
        if record is not None:
            out[i] = record.p10_ms
        else:
            todo.append(i)
    if todo:
        t = time.perf_counter()
        exported = [export_arch(archs[i], settings) for i in todo]
        results = run_protocol([e.serialize() for e in exported], settings)
        seconds = (time.perf_counter() - t) / len(todo)
        for i, e, per_process in zip(todo, exported, results, strict=True):
            p = summarize(per_process, settings.runs, seconds)
            paths = kernel_paths(e.serialize(), settings, e.layers)
            p = Profile(**{**p.__dict__, "kernel_paths": paths})
            store.put_architecture(
                archs[i].arch_id, "calibration", archs[i].to_json(), **archs[i].cost().as_dict()
            )
            store_profile(store, archs[i].arch_id, fingerprint, hardware, p)
            out[i] = p.p10_ms
    return [out[i] for i in range(len(archs))]
