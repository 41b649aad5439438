"""Latency profiles, kernels and predictors, run on every backend (SQLite, PostgreSQL)."""

from __future__ import annotations

import hashlib
import json
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timezone
from typing import Any

import pytest
import sqlalchemy as sa

from nas.storage import (
    LatencyKernelRecord,
    LatencyPredictorRecord,
    LatencyProfileRecord,
    Store,
    kernel_key_hash,
)
from nas.storage._models import ArchitectureRow, Base, EvaluationRow

FP = "f" * 64
FP2 = "e" * 64
HARDWARE: dict[str, object] = {
    "cpu": "AMD EPYC 7R13",
    "cores": 16,
    "ort_version": "1.18.0",
    "provider": "CPUExecutionProvider",
    "threads": 1,
    "batch_size": 1,
    "precision": "int8",
}
PATHS = [{"layer": "conv0", "path": "int8:QLinearConv"}, {"layer": "fc", "path": "float:Gemm"}]
LATENCY_TABLES = {"latency_profiles", "latency_kernels", "latency_predictors"}


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _scalar(url: str, sql: str) -> Any:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(sa.text(sql)).scalar_one()
    finally:
        engine.dispose()


def _profile(store: Store, arch_id: str = "a1", fingerprint: str = FP, **kwargs: Any) -> Any:
    arguments: dict[str, Any] = dict(hardware=HARDWARE, p10_ms=1.0, median_ms=1.25, p90_ms=1.5,
                                     runs=50, processes=3, seconds=4.0)  # fmt: skip
    return store.put_latency_profile(arch_id, fingerprint, **{**arguments, **kwargs})


def _predictor(store: Store, fingerprint: str = FP, **kwargs: Any) -> LatencyPredictorRecord:
    arguments: dict[str, Any] = dict(hardware=HARDWARE, model={"scale": 1.1}, n_kernels=40,
                                     n_models=12)  # fmt: skip
    return store.put_latency_predictor(fingerprint, **{**arguments, **kwargs})


def test_profile_round_trip(store: Store) -> None:
    written = _profile(store, "onnx0123", reference_ratio=1.75, kernel_paths=PATHS)
    read = store.get_latency_profile("onnx0123", FP)
    assert read == written
    for record in (written, read):
        assert isinstance(record, LatencyProfileRecord)
        assert (record.arch_id, record.fingerprint) == ("onnx0123", FP)
        assert record.hardware == HARDWARE
        assert (record.cpu, record.cores, record.precision) == ("AMD EPYC 7R13", 16, "int8")
        assert (record.p10_ms, record.median_ms, record.p90_ms) == (1.0, 1.25, 1.5)
        assert (record.runs, record.processes, record.seconds) == (50, 3, 4.0)
        assert record.reference_ratio == 1.75 and record.kernel_paths == PATHS
        assert record.created_at.utcoffset() == timezone.utc.utcoffset(None)
    assert read.created_at == written.created_at
    assert store.count_architectures() == 0  # arch_id is not a foreign key
    assert store.get_latency_profile("onnx0123", FP2) is None


def test_profile_optional_fields_default_to_none(store: Store) -> None:
    written = _profile(store)
    assert (written.reference_ratio, written.kernel_paths) == (None, None)
    assert store.get_latency_profile("a1", FP) == written


def test_kernel_paths_are_stored_as_given_in_strict_json(store: Store) -> None:
    _profile(store, kernel_paths=PATHS)
    text = _scalar(store.url, "SELECT kernel_paths FROM latency_profiles")
    assert json.loads(text) == PATHS
    assert list(json.loads(text)[0]) == ["layer", "path"]  # key order kept


def test_second_profile_returns_the_first(store: Store) -> None:
    first = _profile(store, median_ms=1.0)
    second = _profile(store, median_ms=9.0, kernel_paths=PATHS)
    assert second == first
    assert store.list_latency_profiles() == [first]


def test_replace_swaps_the_stored_profile(store: Store) -> None:
    _profile(store, p10_ms=1.0)
    assert _profile(store, p10_ms=2.0, replace=True).p10_ms == 2.0
    [record] = store.list_latency_profiles(arch_id="a1")
    assert record.p10_ms == 2.0


def test_profiles_are_distinct_by_arch_and_fingerprint(store: Store) -> None:
    keys = [("a1", FP), ("a1", FP2), ("a2", FP), ("a3", FP2)]
    written = [_profile(store, arch_id, fingerprint) for arch_id, fingerprint in keys]
    assert store.list_latency_profiles() == written  # oldest first
    assert store.list_latency_profiles(fingerprint=FP) == [written[0], written[2]]
    assert store.list_latency_profiles(arch_id="a1") == written[:2]
    assert store.list_latency_profiles(arch_id="a1", fingerprint=FP2) == [written[1]]
    assert store.list_latency_profiles(arch_id="nope") == []


def test_kernels_round_trip(store: Store) -> None:
    conv = {"op": "conv2d", "k": 3, "shape": [1, 16, 32, 32], "bits": {"w": 8, "a": 8}}
    relu = {"op": "relu", "shape": [1, 16, 32, 32]}
    assert store.put_latency_kernels(FP, [(conv, "int8:QLinearConv", 0.25),
                                          (relu, "float:Relu", 0.0)]) == 2  # fmt: skip
    kernels = store.get_latency_kernels(FP)
    assert set(kernels) == {kernel_key_hash(conv), kernel_key_hash(relu)}
    record = kernels[kernel_key_hash(conv)]
    assert isinstance(record, LatencyKernelRecord)
    assert (record.fingerprint, record.key, record.path, record.ms) == (
        FP, conv, "int8:QLinearConv", 0.25
    )  # fmt: skip
    assert record.key_hash == kernel_key_hash(conv)
    assert record.created_at.utcoffset() == timezone.utc.utcoffset(None)
    assert store.get_latency_kernels(FP2) == {}


def test_kernel_keys_are_canonical(store: Store) -> None:
    key = {"op": "conv", "k": 3, "bits": {"w": 8, "a": 4}}
    same = {"bits": {"a": 4, "w": 8}, "k": 3, "op": "conv"}
    canonical = json.dumps(key, sort_keys=True, separators=(",", ":"))
    assert kernel_key_hash(key) == kernel_key_hash(same)
    assert kernel_key_hash(key) == hashlib.sha256(canonical.encode()).hexdigest()
    assert kernel_key_hash({"k": (3, 3)}) == kernel_key_hash({"k": [3, 3]})
    assert store.put_latency_kernels(FP, [(key, "float:Conv", 1.0)]) == 1
    assert store.put_latency_kernels(FP, [(same, "float:Conv", 2.0)]) == 0
    assert _scalar(store.url, "SELECT key FROM latency_kernels") == canonical
    assert store.get_latency_kernels(FP)[kernel_key_hash(same)].ms == 1.0


def test_kernels_skip_stored_keys_and_count_new_ones(store: Store) -> None:
    # More rows than one multi-row INSERT takes, half of them already stored.
    rows = [({"op": "conv", "c": c}, "float:Conv", c / 10) for c in range(400)]
    assert store.put_latency_kernels(FP, rows[::2]) == 200
    assert store.put_latency_kernels(FP, reversed(rows)) == 200
    assert store.put_latency_kernels(FP, rows) == 0
    assert store.put_latency_kernels(FP, []) == 0
    kernels = store.get_latency_kernels(FP)
    assert len(kernels) == 400
    assert all(kernels[kernel_key_hash(key)].ms == ms for key, _, ms in rows)
    assert store.put_latency_kernels(FP2, rows[:3]) == 3  # another fingerprint, other rows
    assert len(store.get_latency_kernels(FP2)) == 3


def test_a_key_repeated_in_one_batch_keeps_the_first(store: Store) -> None:
    rows = [({"op": "a"}, "float:A", 1.0), ({"op": "b"}, "float:B", 2.0),
            ({"op": "a"}, "float:A2", 3.0)]  # fmt: skip
    assert store.put_latency_kernels(FP, rows) == 2
    kernels = store.get_latency_kernels(FP)
    assert (kernels[kernel_key_hash({"op": "a"})].path, len(kernels)) == ("float:A", 2)


def test_predictor_round_trip_and_replace(store: Store) -> None:
    model = {"coef": {"int8:QLinearConv": [0.5, 1e-3], "float:Conv": [0.25, 2e-3]},
             "intercept": -0.125, "features": ["macs", "bytes"], "fitted": True}  # fmt: skip
    written = _predictor(store, model=model)
    read = store.get_latency_predictor(FP)
    assert read == written
    for record in (written, read):
        assert isinstance(record, LatencyPredictorRecord)
        assert (record.fingerprint, record.hardware, record.model) == (FP, HARDWARE, model)
        assert (record.n_kernels, record.n_models) == (40, 12)
    assert store.get_latency_predictor(FP2) is None
    replaced = _predictor(store, model={"scale": 2.0}, n_kernels=80, n_models=20)
    assert store.get_latency_predictor(FP) == replaced
    assert (replaced.model, replaced.n_kernels, replaced.n_models) == ({"scale": 2.0}, 80, 20)
    assert replaced.created_at >= written.created_at
    other = _predictor(store, FP2)
    assert store.list_latency_predictors() == [other, replaced]  # by fingerprint


def test_predictor_model_is_strict_json(store: Store) -> None:
    _predictor(store, model={"big": 1e308, "small": -5e-324})
    text = _scalar(store.url, "SELECT model FROM latency_predictors")
    assert json.loads(text, parse_constant=_reject) == {"big": 1e308, "small": -5e-324}


def _reject(constant: str) -> None:
    raise AssertionError(f"non-standard JSON constant {constant}")


def _without(name: str) -> dict[str, object]:
    return {key: value for key, value in HARDWARE.items() if key != name}


BAD_PROFILES = [
    ("missing 'threads'", {"hardware": _without("threads")}),
    ("unknown key 'gpu'", {"hardware": {**HARDWARE, "gpu": "none"}}),
    (r"hardware\['cores'\] must be an integer", {"hardware": {**HARDWARE, "cores": "16"}}),
    (r"hardware\['threads'\] must be an integer", {"hardware": {**HARDWARE, "threads": True}}),
    (r"hardware\['precision'\] must be a str", {"hardware": {**HARDWARE, "precision": 8}}),
    (r"hardware\['cpu'\] must be at most 255", {"hardware": {**HARDWARE, "cpu": "x" * 256}}),
    (
        r"hardware\['provider'\] must be at most 64",
        {"hardware": {**HARDWARE, "provider": "p" * 65}},
    ),
    ("arch_id must be at most 32", {"arch_id": "a" * 33}),
    ("fingerprint must be at most 64", {"fingerprint": "f" * 65}),
    ("median_ms must be a finite number", {"median_ms": math.nan}),
    ("p90_ms must be a finite number", {"p90_ms": math.inf}),
    ("p10_ms must be >= 0", {"p10_ms": -1.0}),
    ("seconds must be a finite number", {"seconds": "slow"}),
    ("reference_ratio must be a finite number", {"reference_ratio": math.inf}),
    ("runs must be >= 1", {"runs": 0}),
    ("processes must be an integer", {"processes": 2.5}),
    ("kernel_paths must be a list of dicts", {"kernel_paths": "int8:QLinearConv"}),
    (r"kernel_paths\[1\] must be a dict", {"kernel_paths": [PATHS[0], "float:Gemm"]}),
    (r"kernel_paths\[0\]\['layers'\] must be JSON .* set", {"kernel_paths": [{"layers": {1, 2}}]}),
    (r"kernel_paths\[0\]\['ms'\] must be a finite number", {"kernel_paths": [{"ms": math.nan}]}),
    (r"kernel_paths\[0\] keys must be str", {"kernel_paths": [{1: "conv"}]}),
]


@pytest.mark.parametrize(("message", "kwargs"), BAD_PROFILES)
def test_bad_profiles_are_rejected(store: Store, message: str, kwargs: dict[str, Any]) -> None:
    arguments = {"arch_id": "a1", "fingerprint": FP, **kwargs}
    with pytest.raises(ValueError, match=message):
        _profile(store, **arguments)
    assert store.list_latency_profiles() == []


GOOD_KERNEL = ({"op": "conv"}, "float:Conv", 1.0)
BAD_KERNELS = [
    (r"rows\[1\] ms must be a finite number", ({"op": "x"}, "float:X", math.inf)),
    (r"rows\[1\] ms must be >= 0", ({"op": "x"}, "float:X", -0.5)),
    (r"rows\[1\] path must be at most 255", ({"op": "x"}, "p" * 256, 1.0)),
    (r"rows\[1\] path must be a str", ({"op": "x"}, None, 1.0)),
    (r"rows\[1\] key must be a dict", ([("op", "x")], "float:X", 1.0)),
    (r"rows\[1\] key keys must be str", ({3: "x"}, "float:X", 1.0)),
    (r"rows\[1\] key\['k'\]\[0\] must be a finite number", ({"k": [math.nan]}, "f:X", 1.0)),
    (r"rows\[1\] must be a \(key, path, ms\) tuple", ({"op": "x"}, "float:X")),
]


@pytest.mark.parametrize(("message", "bad"), BAD_KERNELS)
def test_bad_kernels_are_rejected(store: Store, message: str, bad: Any) -> None:
    with pytest.raises(ValueError, match=message):
        store.put_latency_kernels(FP, [GOOD_KERNEL, bad])  # the good one is not written either
    assert store.get_latency_kernels(FP) == {}


def test_bad_kernel_fingerprint_is_rejected(store: Store) -> None:
    with pytest.raises(ValueError, match="fingerprint must be at most 64"):
        store.put_latency_kernels("f" * 65, [GOOD_KERNEL])
    with pytest.raises(ValueError, match="key must be a dict"):
        kernel_key_hash(["op", "conv"])  # type: ignore[arg-type]


BAD_PREDICTORS = [
    (r"model\['coef'\]\[1\] must be a finite number", {"model": {"coef": [1.0, math.inf]}}),
    (r"model\['nan'\] must be a finite number", {"model": {"nan": math.nan}}),
    ("model must be a dict", {"model": [1.0, 2.0]}),
    (r"model\['fit'\] must be JSON .* object", {"model": {"fit": object()}}),
    ("missing 'precision'", {"hardware": _without("precision")}),
    ("n_kernels must be an integer", {"n_kernels": None}),
    ("n_models must be >= 0", {"n_models": -1}),
    ("fingerprint must be at most 64", {"fingerprint": "f" * 65}),
]


@pytest.mark.parametrize(("message", "kwargs"), BAD_PREDICTORS)
def test_bad_predictors_are_rejected(store: Store, message: str, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=message):
        _predictor(store, **kwargs)
    assert store.list_latency_predictors() == []


def test_a_database_from_before_latencies_gets_the_tables(store_url: str) -> None:
    old = [ArchitectureRow.__table__, EvaluationRow.__table__]
    engine = sa.create_engine(store_url)
    try:
        Base.metadata.create_all(engine, tables=old)  # type: ignore[arg-type]
    finally:
        engine.dispose()
    assert not LATENCY_TABLES & _tables(store_url)
    with Store(store_url) as store:
        store.put_architecture("a1", "tiny", "{}", params=1, macs=2, bitops=3, bytes=4,
                               peak_activation_bytes=5)  # fmt: skip
        assert _profile(store).median_ms == 1.25
    assert _tables(store_url) >= LATENCY_TABLES | {"architectures", "evaluations"}
    with Store(store_url) as store:  # opening again is harmless and keeps the rows
        assert store.count_architectures() == 1
        assert len(store.list_latency_profiles()) == 1


def _race(store_url: str, work: Any, workers: int = 4) -> list[Any]:
    """Run ``work(store, worker)`` at once in ``workers`` threads, one store each."""
    stores = [Store(store_url) for _ in range(workers)]
    barrier = threading.Barrier(workers)

    def run(store: Store, worker: int) -> Any:
        barrier.wait()
        return work(store, worker)

    try:
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(run, stores, range(workers)))
    finally:
        for store in stores:
            store.close()


def test_racing_profile_writers_never_raise(store_url: str) -> None:
    records = _race(store_url, lambda store, worker: _profile(store, median_ms=1.0 + worker))
    assert all(record == records[0] for record in records)
    with Store(store_url) as store:
        assert store.list_latency_profiles() == records[:1]


def test_racing_kernel_writers_never_raise(store_url: str) -> None:
    rows = [({"op": "conv", "c": c}, "float:Conv", 0.5) for c in range(300)]

    def work(store: Store, worker: int) -> int:
        mine = rows[worker * 50 : worker * 50 + 150]  # overlaps its neighbours
        return store.put_latency_kernels(FP, mine if worker % 2 else reversed(mine))

    assert sum(_race(store_url, work)) == 300
    with Store(store_url) as store:
        assert len(store.get_latency_kernels(FP)) == 300


def test_racing_predictor_writers_never_raise(store_url: str) -> None:
    records = _race(store_url, lambda store, worker: _predictor(store, n_models=worker))
    with Store(store_url) as store:
        stored = store.list_latency_predictors()
    assert len(stored) == 1 and stored[0] in records
