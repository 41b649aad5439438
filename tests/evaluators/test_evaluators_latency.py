"""Measured latency: the protocol, its estimator, the fingerprint cache, and the predictor.

Every measurement here uses a tiny protocol (20 runs, no timed warm-up, one or
two processes) so that the whole file runs in seconds on a busy machine.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import nas.evaluators._latency as latency_mod
import nas.evaluators._predictor as predictor_mod
from nas import ConfigError, EvaluationError
from nas.evaluators import EvalContext, get_evaluator
from nas.evaluators._latency import (
    Hardware,
    Latency,
    LatencySettings,
    available_providers,
    export_arch,
    profile_onnx,
    run_protocol,
    summarize,
)
from nas.evaluators._predictor import LatencyPredictor, kernel_key_hash, kernels
from nas.search_space import Architecture, LayerSpec
from nas.storage import Store

TINY: dict[str, Any] = {"runs": 20, "warmup_runs": 2, "warmup_seconds": 0.0, "processes": 1}


def tiny(**fields: Any) -> LatencySettings:
    return LatencySettings(**{**TINY, **fields})


def conv(width: int = 8, bits: int = 8, **fields: Any) -> LayerSpec:
    return LayerSpec(type="conv3x3", width=width, wbits=bits, abits=bits, **fields)


def arch_of(*layers: LayerSpec, **fields: Any) -> Architecture:
    return Architecture(input_shape=(1, 8, 8), num_classes=10, stages=(layers,), **fields)


ARCH = arch_of(conv())


@pytest.fixture
def runner_calls(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Each start of a measuring process (the real one still runs), in order."""
    calls: list[Path] = []
    real = latency_mod._run_runner

    def counting(request_path: Path) -> list[dict[str, Any]]:
        calls.append(request_path)
        return real(request_path)

    monkeypatch.setattr(latency_mod, "_run_runner", counting)
    return calls


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(f"sqlite:///{tmp_path / 'db'}") as s:
        yield s


# -- the protocol --------------------------------------------------------------------


def test_profile_onnx_runs_the_protocol_in_each_process() -> None:
    settings = tiny(processes=2)
    exported = export_arch(ARCH, settings)
    p = profile_onnx(exported.serialize(), settings, exported.layers)
    assert 0 < p.p10_ms <= p.median_ms <= p.p90_ms
    assert p.processes == 2 and len(p.per_process) == 2 and p.runs == 20
    for r in p.per_process:
        assert 0 < r["p10_ms"] <= r["median_ms"] <= r["p90_ms"]
    assert p.reference_ratio is None
    assert len(p.kernel_paths) == 2  # the convolution and the head
    assert [k["op"] for k in p.kernel_paths] == ["Conv", "Gemm"]
    for k in p.kernel_paths:
        assert set(k) == {"layer", "op", "wbits", "abits", "kernel", "path"}
        assert k["path"] in ("int8", "float", "dequantize+float")
    assert (p.kernel_paths[0]["wbits"], p.kernel_paths[0]["abits"]) == (8, 8)
    assert (p.kernel_paths[1]["wbits"], p.kernel_paths[1]["abits"]) == (32, 32)


def _fake_runner(
    monkeypatch: pytest.MonkeyPatch, per_process: list[dict[str, float]]
) -> list[dict[str, Any]]:
    """Replace the measuring process: process i reports ``per_process[i]``; the requests."""
    requests: list[dict[str, Any]] = []
    results = iter(per_process)

    def fake(request_path: Path) -> list[dict[str, Any]]:
        request = json.loads(Path(request_path).read_text(encoding="utf-8"))
        requests.append(request)
        result = next(results)
        return [dict(result) for _ in request["models"]]

    monkeypatch.setattr(latency_mod, "_run_runner", fake)
    return requests


def test_the_estimator_is_the_median_across_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    per_process = [
        {"p10_ms": 1.0, "median_ms": 2.0, "p90_ms": 30.0, "reference_median_ms": 1.0},
        {"p10_ms": 5.0, "median_ms": 9.0, "p90_ms": 10.0, "reference_median_ms": 3.0},
        {"p10_ms": 2.0, "median_ms": 4.0, "p90_ms": 6.0, "reference_median_ms": 1.0},
    ]
    requests = _fake_runner(monkeypatch, per_process)
    settings = tiny(processes=3, reference=True)
    exported = export_arch(ARCH, settings)
    p = profile_onnx(exported.serialize(), settings, exported.layers)
    assert (p.p10_ms, p.median_ms, p.p90_ms) == (2.0, 4.0, 10.0)
    # Ratios of medians per process: 2, 3, 4 -> 3 (not 4 / 1, the ratio of the medians).
    assert p.reference_ratio == 3.0
    assert p.processes == 3 and p.metrics()["latency_ms"] == 2.0
    assert p.metrics()["latency_ratio"] == 3.0
    assert len(requests) == 3
    for request in requests:
        assert (request["runs"], request["warmup_runs"], request["warmup_seconds"]) == (20, 2, 0)
        assert request["threads"] == 1 and request["provider"] == "cpu"
        assert request["reference"] is not None and len(request["models"]) == 1


def test_summarize_of_an_even_number_of_processes_averages_the_middle_two() -> None:
    results = [
        {"p10_ms": 1.0, "median_ms": 2.0, "p90_ms": 3.0},
        {"p10_ms": 3.0, "median_ms": 4.0, "p90_ms": 9.0},
    ]
    p = summarize(results, runs=20, seconds=1.0)
    assert (p.p10_ms, p.median_ms, p.p90_ms) == (2.0, 3.0, 6.0)
    assert p.reference_ratio is None and "latency_ratio" not in p.metrics()


def test_run_protocol_times_every_model_in_each_process(runner_calls: list[Path]) -> None:
    settings = tiny(processes=2)
    models = [export_arch(a, settings).serialize() for a in (ARCH, arch_of(conv(16)))]
    per_model = run_protocol(models, settings)
    assert len(runner_calls) == 2  # one process per repetition, not one per model
    assert [len(r) for r in per_model] == [2, 2]
    assert all(r["p10_ms"] > 0 for results in per_model for r in results)


# -- the fingerprint and the cache ---------------------------------------------------


def test_a_stored_profile_is_not_measured_again(
    store: Store, runner_calls: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = Latency(**TINY)
    first.attach_store(store)
    measured = first.measure(ARCH)
    assert len(runner_calls) == 1
    again = first.measure(ARCH)
    assert len(runner_calls) == 1, "a stored profile was measured again"
    assert again.p10_ms == measured.p10_ms and again.kernel_paths == measured.kernel_paths
    # Another evaluator on the same fingerprint reads the same row.
    same = Latency(**TINY)
    same.attach_store(store)
    assert same.measure(ARCH).median_ms == measured.median_ms and len(runner_calls) == 1

    other = Latency(**{**TINY, "threads": 2})
    assert other.hardware_fingerprint != first.hardware_fingerprint
    other.attach_store(store)
    other.measure(ARCH)
    assert len(runner_calls) == 2
    rows = store.list_latency_profiles(arch_id=ARCH.arch_id)
    assert len(rows) == 2
    assert {r.fingerprint for r in rows} == {
        first.hardware_fingerprint,
        other.hardware_fingerprint,
    }
    assert sorted(r.threads for r in rows) == [1, 2]

    monkeypatch.setattr(latency_mod, "cpu_model", lambda: "Imaginary CPU 9000")
    moved = Latency(**TINY)
    assert moved.hardware.cpu == "Imaginary CPU 9000"
    assert moved.hardware_fingerprint != first.hardware_fingerprint
    moved.attach_store(store)
    moved.measure(ARCH)
    assert len(runner_calls) == 3


def test_the_batch_size_is_part_of_the_fingerprint_and_of_the_model(store: Store) -> None:
    one, two = Latency(**TINY), Latency(**{**TINY, "batch_size": 2})
    assert one.hardware_fingerprint != two.hardware_fingerprint
    for ev in (one, two):
        ev.attach_store(store)
        ev.measure(ARCH)
    rows = store.list_latency_profiles(arch_id=ARCH.arch_id)
    assert sorted(r.batch_size for r in rows) == [1, 2]
    assert len({r.fingerprint for r in rows}) == 2


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(Hardware)])
def test_every_hardware_field_changes_the_fingerprint(field: str) -> None:
    settings = tiny()
    hardware = settings.hardware()
    value = getattr(hardware, field)
    changed = dataclasses.replace(hardware, **{field: value + 1 if isinstance(value, int) else "x"})
    assert settings.fingerprint(changed) != settings.fingerprint(hardware)
    assert settings.fingerprint(hardware) == settings.fingerprint()


#: A value that changes each protocol field (provider: only cpu here, see the hardware test).
PROTOCOL_CHANGES: dict[str, Any] = {
    "runs": 21,
    "warmup_runs": 3,
    "warmup_seconds": 0.1,
    "processes": 2,
    "threads": 2,
    "batch_size": 2,
    "precision": "float",
    "low_bits": "int8",
    "reference": True,
}
#: How the numbers are used, not how they are taken: no new measurement needed.
NOT_FINGERPRINTED = {"mode": "predict", "margin": 0.5}


@pytest.mark.parametrize(("field", "value"), PROTOCOL_CHANGES.items())
def test_every_protocol_field_changes_the_fingerprint(field: str, value: Any) -> None:
    assert tiny(**{field: value}).fingerprint() != tiny().fingerprint()


def test_every_setting_is_known_to_change_the_fingerprint_or_not() -> None:
    # A new setting must be added to one of the two tables above.
    known = {*PROTOCOL_CHANGES, *NOT_FINGERPRINTED, "provider"}
    assert set(LatencySettings.model_fields) == known


@pytest.mark.parametrize(("field", "value"), NOT_FINGERPRINTED.items())
def test_the_mode_does_not_change_the_fingerprint_of_the_numbers(
    field: str, value: Any, synthetic_ctx: EvalContext
) -> None:
    # Calibrated in mode measure, used in mode predict: the same machine and protocol.
    assert tiny(**{field: value}).fingerprint() == tiny().fingerprint()
    if field == "mode":
        measure, predict = Latency(**TINY), Latency(**{**TINY, "mode": value})
        assert measure.hardware_fingerprint == predict.hardware_fingerprint
        # ... but measured and predicted evaluations are kept apart.
        assert measure.fingerprint(synthetic_ctx) != predict.fingerprint(synthetic_ctx)


def test_the_hardware_is_stored_with_the_profile(store: Store) -> None:
    ev = Latency(**TINY)
    ev.attach_store(store)
    profile = ev.measure(ARCH)
    record = store.get_latency_profile(ARCH.arch_id, ev.hardware_fingerprint)
    assert record is not None
    hardware = ev.hardware
    assert record.cpu == hardware.cpu == latency_mod.cpu_model()
    assert record.cores == hardware.cores >= 1
    assert record.ort_version == ort.__version__
    assert (record.provider, record.threads, record.batch_size) == ("cpu", 1, 1)
    assert record.precision == hardware.precision == "qdq-int4"
    assert (record.runs, record.processes) == (20, 1)
    assert record.p10_ms == profile.p10_ms and record.median_ms == profile.median_ms
    assert record.kernel_paths == profile.kernel_paths
    assert tiny(precision="float").hardware().precision == "float"


# -- the reference model -------------------------------------------------------------


@pytest.mark.parametrize("reference", [False, True])
def test_latency_ratio_only_with_a_reference(
    reference: bool, synthetic_ctx: EvalContext, store: Store
) -> None:
    ev = Latency(**TINY, reference=reference)
    ev.attach_store(store)
    metrics = ev(ARCH, synthetic_ctx)  # checks the metrics against ev.metrics
    assert set(metrics) == set(ev.metrics)
    assert metrics["latency_ms"] > 0 and 0 <= metrics["int8_share"] <= 1
    if reference:
        assert math.isfinite(metrics["latency_ratio"]) and metrics["latency_ratio"] > 0
        assert ev.directions["latency_ratio"] == "minimize"
        record = store.get_latency_profile(ARCH.arch_id, ev.hardware_fingerprint)
        assert record is not None and record.reference_ratio == metrics["latency_ratio"]
    else:
        assert "latency_ratio" not in metrics and "latency_ratio" not in ev.metrics


# -- errors --------------------------------------------------------------------------


def _onnx_model(nodes: list[Any], inits: list[Any], out: list[int], domain: str = "") -> bytes:
    graph = helper.make_graph(
        nodes,
        "bad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out)],
        inits,
    )
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return model.SerializeToString()


UNKNOWN_OP = _onnx_model(
    [helper.make_node("Frobnicate", ["x"], ["y"], domain="nas.test")], [], [1, 1, 8, 8], "nas.test"
)
#: Loads (ORT checks no channel counts at load time) but fails on the first run.
WRONG_CHANNELS = _onnx_model(
    [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
    [numpy_helper.from_array(np.zeros((8, 3, 3, 3), np.float32), "w")],
    [1, 8, 8, 8],
)


def _assert_cannot_run(call: Callable[[], object]) -> None:
    with pytest.raises(EvaluationError) as info:
        call()
    message = str(info.value)
    assert message.startswith("onnxruntime cannot run the model: "), message
    assert len(message.splitlines()) == 1, message


def test_a_model_onnxruntime_cannot_load_is_one_line_error(runner_calls: list[Path]) -> None:
    _assert_cannot_run(lambda: profile_onnx(UNKNOWN_OP, tiny()))
    assert runner_calls == [], "the model was timed although it cannot be loaded"


def test_an_error_from_the_measuring_process_is_one_line() -> None:
    # The runner's own check (the parent's check skipped): it reports the error per model.
    [[result]] = run_protocol([UNKNOWN_OP], tiny())
    assert "Frobnicate" in result["error"]
    _assert_cannot_run(lambda: summarize([result], 20, 0.0))


def test_a_model_that_fails_when_run_is_one_line_error() -> None:
    _assert_cannot_run(lambda: profile_onnx(WRONG_CHANNELS, tiny()))


# -- providers -----------------------------------------------------------------------


def test_an_unavailable_provider_is_a_one_line_config_error() -> None:
    if "cuda" in available_providers():
        pytest.skip("this onnxruntime has the CUDA execution provider")
    from nas._profile import latency_settings

    with pytest.raises(ValueError, match="onnxruntime-gpu"):
        LatencySettings(provider="cuda")
    for make in (
        lambda: latency_settings(provider="cuda"),
        lambda: get_evaluator("latency", provider="cuda"),
    ):
        with pytest.raises(ConfigError) as info:
            make()
        assert info.value.field == "provider"
        message = str(info.value)
        assert "'cuda'" in message and "available: cpu" in message
        assert len(message.splitlines()) == 1, message


@pytest.mark.gpu
def test_profile_on_cuda() -> None:
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)")
    settings = tiny(provider="cuda", precision="float")
    exported = export_arch(ARCH, settings)
    p = profile_onnx(exported.serialize(), settings, exported.layers)
    assert 0 < p.p10_ms <= p.median_ms <= p.p90_ms
    hardware = settings.hardware()
    assert hardware.provider == "cuda" and " + " in hardware.cpu  # the CPU and the GPU
    assert settings.fingerprint() != tiny(precision="float").fingerprint()


# -- the predictor -------------------------------------------------------------------

IDENTITY = LayerSpec(type="identity", width=8)
#: Four architectures for fitting: shared kernels, different sizes and bits.
FIT_ARCHS = (
    arch_of(conv(8)),
    arch_of(conv(8), conv(16)),
    arch_of(conv(8), IDENTITY, conv(16), conv(16, stride=2)),
    arch_of(conv(16, bits=4), conv(8)),
)


def test_kernels_of_an_architecture() -> None:
    settings = tiny()
    arch = arch_of(conv(8), IDENTITY, conv(16))
    ks = kernels(arch, settings)
    assert [k.key["family"] for k in ks] == ["conv", "conv", "head"]  # identity: no kernel
    assert ks[-1].key["width"] == 10 and ks[-1].key["in"] == [16, 8, 8]
    for k in ks:
        assert json.loads(json.dumps(k.key)) == k.key
        assert k.hash == kernel_key_hash(k.key) and len(k.hash) == 64
        assert all(math.isfinite(f) and f >= 0 for f in k.features)
    assert [k.hash for k in kernels(arch, settings)] == [k.hash for k in ks]
    assert len({k.hash for k in ks}) == 3


def test_shared_layer_configurations_share_a_kernel() -> None:
    settings = tiny()
    plain = kernels(arch_of(conv(8), conv(16)), settings)
    skipped = kernels(arch_of(conv(8), IDENTITY, conv(16)), settings)
    assert [k.hash for k in plain] == [k.hash for k in skipped]  # identity changes nothing
    # The first convolution's output is read by a 4-bit quantizer instead: another kernel.
    reread = kernels(arch_of(conv(8), conv(16, bits=4)), settings)
    assert reread[0].hash != plain[0].hash
    # Another protocol that changes the model (batch, low bits), another kernel.
    arch = arch_of(conv(8), conv(16))
    assert kernels(arch, tiny(batch_size=2))[0].hash != plain[0].hash
    assert kernels(arch, tiny(low_bits="int8"))[0].hash != plain[0].hash
    assert kernels(arch, tiny(runs=5, processes=3))[0].hash == plain[0].hash  # timing only


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A predictor filled, fitted and saved in a fresh store; what it measured."""
    settings = tiny()
    url = f"sqlite:///{tmp_path_factory.mktemp('predictor') / 'db'}"
    timed: list[str] = []  # the hash of each kernel measured, every call
    real = predictor_mod.measure_kernels

    def counting(ks: Any, s: LatencySettings) -> list[float]:
        timed.extend(k.hash for k in ks)
        return real(ks, s)

    with Store(url) as store, pytest.MonkeyPatch.context() as patch:
        patch.setattr(predictor_mod, "measure_kernels", counting)
        predictor = LatencyPredictor(settings, {}, store=store)
        first = predictor.fill(FIT_ARCHS[:1])
        again = predictor.fill(FIT_ARCHS[:1])
        filled = predictor.fill(FIT_ARCHS)
        exported = [export_arch(a, settings).serialize() for a in FIT_ARCHS]
        measured = [summarize(r, 20, 0.0).p10_ms for r in run_protocol(exported, settings)]
        fit = predictor.fit(FIT_ARCHS, measured)
        predictor.save(store, n_models=len(FIT_ARCHS))
        kernels_stored = len(store.get_latency_kernels(settings.fingerprint()))
    distinct = {k.hash for a in FIT_ARCHS for k in kernels(a, settings)}
    return {
        "settings": settings,
        "url": url,
        "predictor": predictor,
        "first": first,
        "again": again,
        "filled": filled,
        "distinct": distinct,
        "measured": measured,
        "fit": fit,
        "kernels_stored": kernels_stored,
        "timed": timed,
        "predicted": [predictor.predict(a) for a in FIT_ARCHS],
    }


def test_fill_measures_each_kernel_once(fitted: dict[str, Any]) -> None:
    n_first = len(kernels(FIT_ARCHS[0], fitted["settings"]))
    assert fitted["first"] == n_first == 2
    assert fitted["again"] == 0
    assert fitted["first"] + fitted["filled"] == len(fitted["distinct"])
    assert set(fitted["predictor"].table) == fitted["distinct"]
    assert sorted(fitted["timed"]) == sorted(fitted["distinct"])  # each one once
    assert all(ms > 0 for ms in fitted["predictor"].table.values())
    assert fitted["kernels_stored"] == len(fitted["distinct"])


def test_fit_gives_a_finite_correction(fitted: dict[str, Any]) -> None:
    predictor = fitted["predictor"]
    assert len(predictor.correction) == 3
    assert all(math.isfinite(c) for c in predictor.correction)
    assert all(math.isfinite(v) and v >= 0 for v in fitted["fit"].values())
    assert all(math.isfinite(p) and p > 0 for p in fitted["predicted"])
    assert set(predictor.fallback) == {"conv", "head"}


def test_a_loaded_predictor_predicts_the_same_without_measuring(
    fitted: dict[str, Any], runner_calls: list[Path]
) -> None:
    with Store(fitted["url"]) as store:
        loaded = LatencyPredictor.load(store, fitted["settings"])
        assert loaded is not None
        assert loaded.correction == pytest.approx(fitted["predictor"].correction)
        predicted = [loaded.predict(a) for a in FIT_ARCHS]
        record = store.get_latency_predictor(fitted["settings"].fingerprint())
        assert LatencyPredictor.load(store, tiny(threads=2)) is None  # another fingerprint
    assert predicted == pytest.approx(fitted["predicted"])
    assert runner_calls == [], "the loaded predictor measured a kernel again"
    assert record is not None and record.n_models == len(FIT_ARCHS)
    assert record.n_kernels == len(fitted["distinct"])


def test_unmeasured_kernels_use_the_fitted_fallback(
    fitted: dict[str, Any], runner_calls: list[Path]
) -> None:
    trained = fitted["predictor"]
    blind = LatencyPredictor(
        fitted["settings"], {}, trained.correction, trained.fallback, measure_missing=False
    )
    new = arch_of(conv(16), conv(8, stride=2))  # kernels that are not in any table
    assert not {k.hash for k in kernels(new, fitted["settings"])} & set(trained.table)
    value = blind.predict(new)
    assert math.isfinite(value) and value > 0
    assert runner_calls == []


def test_a_missing_kernel_is_measured_on_first_use(
    fitted: dict[str, Any], runner_calls: list[Path]
) -> None:
    trained = fitted["predictor"]
    predictor = LatencyPredictor(fitted["settings"], trained.table, trained.correction)
    new = arch_of(conv(16), conv(8, stride=2))
    assert predictor.predict(new) > 0
    assert len(runner_calls) == 1  # all missing kernels in one process
    before = len(predictor.table)
    predictor.predict(new)
    assert len(runner_calls) == 1 and len(predictor.table) == before


def test_predict_mode_needs_a_calibrated_predictor(store: Store) -> None:
    ev = get_evaluator("latency", **TINY, mode="predict")
    assert "latency_ms" in ev.metrics
    with pytest.raises(ConfigError) as info:
        ev.attach_store(store)
    assert info.value.field == "evaluators.latency.mode"
    assert "nas profile --calibrate" in str(info.value)


def test_predict_mode_reads_the_saved_predictor(
    fitted: dict[str, Any], synthetic_ctx: EvalContext, runner_calls: list[Path]
) -> None:
    ev = get_evaluator("latency", **TINY, mode="predict")
    with Store(fitted["url"]) as store:
        ev.attach_store(store)
        metrics = ev(FIT_ARCHS[1], synthetic_ctx)
    assert metrics["latency_ms"] == pytest.approx(fitted["predicted"][1])
    assert metrics.get("latency_measured", 0.0) == 0.0  # predicted, not measured
    assert runner_calls == []
