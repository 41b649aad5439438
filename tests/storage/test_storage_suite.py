"""The store's contract, run on every backend (``store_url``: SQLite, PostgreSQL)."""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from datetime import timezone

import optuna
import pytest
import sqlalchemy as sa

from nas._errors import StorageError
from nas.storage import EvaluationRecord, Store, check_url

OURS = {
    "architectures",
    "evaluations",
    "evaluation_files",
    "latency_profiles",
    "latency_kernels",
    "latency_predictors",
}
OPTUNAS = {"studies", "trials", "trial_params", "trial_values", "version_info"}
FP = "f" * 64


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _put_arch(store: Store, arch_id: str = "a1", space: str = "tiny") -> bool:
    return store.put_architecture(
        arch_id, space, '{"layers": []}', params=1, macs=2, bitops=3, bytes=4,
        peak_activation_bytes=5,
    )  # fmt: skip


def test_tables_live_next_to_optunas(store: Store) -> None:
    study = optuna.create_study(storage=store.optuna_storage(), study_name="s")
    study.tell(study.ask(), 1.0)
    assert store.optuna_storage() is store.optuna_storage()
    assert _tables(store.url) >= OURS | OPTUNAS
    assert optuna.load_study(study_name="s", storage=store.url).trials[0].value == 1.0


def test_store_opened_after_optuna_adds_its_tables(store_url: str) -> None:
    optuna.storages.RDBStorage(store_url).engine.dispose()
    with Store(store_url), Store(store_url):  # creating twice is harmless
        pass
    assert _tables(store_url) >= OURS | OPTUNAS


def test_create_false_creates_nothing(store_url: str) -> None:
    with Store(store_url, create=False):
        pass
    assert not OURS & _tables(store_url)


def test_put_architecture_is_idempotent(store: Store) -> None:
    assert _put_arch(store)
    assert not _put_arch(store, space="other")
    assert store.count_architectures() == 1
    record = store.get_architecture("a1")
    assert record is not None
    assert (record.space, record.canonical_json, record.params) == ("tiny", '{"layers": []}', 1)
    assert (record.macs, record.bitops, record.bytes, record.peak_activation_bytes) == (2, 3, 4, 5)
    assert record.created_at.tzinfo is not None
    assert record.created_at.utcoffset() == timezone.utc.utcoffset(None)
    assert store.get_architecture("nope") is None


def test_big_costs_fit(store: Store) -> None:
    big = 2**62
    store.put_architecture("a1", "s", "{}", params=big, macs=big, bitops=big, bytes=big,
                           peak_activation_bytes=big)  # fmt: skip
    record = store.get_architecture("a1")
    assert record is not None and record.bitops == big


def test_evaluation_round_trip_with_non_finite_metrics(store: Store) -> None:
    _put_arch(store)
    metrics = {"acc": 0.75, "inf": math.inf, "ninf": -math.inf, "nan": math.nan, "n": 3}
    written = store.put_evaluation("a1", "proxy", FP, metrics, seconds=1.5)
    read = store.get_evaluation("a1", "proxy", FP)
    assert read is not None
    for record in (written, read):
        assert (record.arch_id, record.evaluator, record.fingerprint) == ("a1", "proxy", FP)
        assert record.metrics["acc"] == 0.75 and record.metrics["n"] == 3.0
        assert record.metrics["inf"] == math.inf and record.metrics["ninf"] == -math.inf
        assert math.isnan(record.metrics["nan"])
        assert record.seconds == 1.5 and record.error is None
    assert read.created_at == written.created_at
    assert read.created_at.utcoffset() == timezone.utc.utcoffset(None)


def test_metrics_are_stored_as_strict_json(store: Store) -> None:
    _put_arch(store)
    store.put_evaluation("a1", "proxy", FP, {"x": math.inf, "y": math.nan}, seconds=0.0)
    engine = sa.create_engine(store.url)
    with engine.connect() as connection:
        text = connection.execute(sa.text("SELECT metrics FROM evaluations")).scalar_one()
    engine.dispose()
    assert json.loads(text, parse_constant=_reject) == {"x": "inf", "y": "nan"}


def _reject(constant: str) -> None:
    raise AssertionError(f"non-standard JSON constant {constant}")


def test_second_success_returns_the_first(store: Store) -> None:
    _put_arch(store)
    first = store.put_evaluation("a1", "proxy", FP, {"acc": 0.5}, seconds=1.0)
    second = store.put_evaluation("a1", "proxy", FP, {"acc": 0.9}, seconds=2.0)
    assert second == first
    assert store.get_evaluation("a1", "proxy", FP) == first
    assert len(store.list_evaluations()) == 1


def test_failures_repeat_and_are_never_the_result(store: Store) -> None:
    _put_arch(store)
    for attempt in range(2):
        failed = store.put_evaluation("a1", "train", FP, {}, seconds=0.5, error=f"OOM {attempt}")
        assert failed.error == f"OOM {attempt}"
    assert store.get_evaluation("a1", "train", FP) is None
    ok = store.put_evaluation("a1", "train", FP, {"acc": 0.8}, seconds=3.0)
    assert store.get_evaluation("a1", "train", FP) == ok
    errors = [record.error for record in store.list_evaluations(arch_id="a1")]
    assert errors == ["OOM 0", "OOM 1", None]


def test_keys_are_distinct_by_evaluator_and_fingerprint(store: Store) -> None:
    _put_arch(store)
    _put_arch(store, "a2")
    for arch_id, evaluator, fingerprint in [("a1", "p", FP), ("a1", "q", FP), ("a1", "p", "0"),
                                            ("a2", "p", FP)]:  # fmt: skip
        store.put_evaluation(arch_id, evaluator, fingerprint, {"v": 1.0}, seconds=0.0)
    assert len(store.list_evaluations()) == 4
    assert len(store.list_evaluations(arch_id="a1")) == 3
    assert len(store.list_evaluations(evaluator="p")) == 3
    assert len(store.list_evaluations(arch_id="a1", evaluator="q")) == 1


def test_evaluation_of_an_unknown_architecture_is_refused(store: Store) -> None:
    for error in (None, "boom"):
        with pytest.raises(StorageError, match="put_architecture first"):
            store.put_evaluation("ghost", "proxy", FP, {"v": 1.0}, seconds=0.0, error=error)
    assert store.list_evaluations() == []


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("metrics", {"metrics": {"acc": "high"}}),
        ("metrics", {"metrics": {"ok": True}}),
        ("arch_id", {"arch_id": "a" * 33}),
        ("fingerprint", {"fingerprint": "f" * 65}),
    ],
)
def test_bad_evaluation_values_are_rejected(
    store: Store, field: str, kwargs: dict[str, object]
) -> None:
    _put_arch(store)
    arguments: dict[str, object] = {"arch_id": "a1", "evaluator": "p", "fingerprint": FP,
                                    "metrics": {}, "seconds": 0.0, **kwargs}  # fmt: skip
    with pytest.raises(ValueError, match=field):
        store.put_evaluation(**arguments)  # type: ignore[arg-type]
    assert store.list_evaluations() == []


def test_racing_writers_never_raise(store_url: str) -> None:
    stores = [Store(store_url) for _ in range(4)]
    try:
        with ThreadPoolExecutor(len(stores)) as pool:
            inserted = list(pool.map(_put_arch, stores))
            records = list(pool.map(_race_evaluation, stores, range(len(stores))))
    finally:
        for store in stores:
            store.close()
    assert sorted(inserted) == [False, False, False, True]
    assert all(record == records[0] for record in records)
    with Store(store_url) as store:
        assert store.list_evaluations() == records[:1]


def _race_evaluation(store: Store, worker: int) -> EvaluationRecord:
    return store.put_evaluation("a1", "proxy", FP, {"worker": worker}, seconds=0.0)


def test_check_url_accepts_a_live_database(store: Store) -> None:
    check_url(store.url)


def test_evaluation_files_round_trip_and_first_write_wins(store: Store) -> None:
    _put_arch(store)
    blob = bytes(range(256)) * 40  # binary, NUL bytes included
    store.put_evaluation("a1", "train", FP, {"acc": 0.5}, 1.0, files={"weights.safetensors": blob})
    other = {"weights.safetensors": b"another run"}
    store.put_evaluation("a1", "train", FP, {"acc": 0.9}, 1.0, files=other)
    assert store.get_evaluation_files("a1", "train", FP) == {"weights.safetensors": blob}
    assert store.get_evaluation_files("a1", "train", "e" * 64) == {}
    assert store.get_evaluation_files("a1", "naswot", FP) == {}
    with pytest.raises(StorageError, match="architecture is not stored"):
        store.put_evaluation("missing", "train", FP, {"acc": 0.5}, 1.0, files={"w": b"x"})
    assert store.get_evaluation_files("missing", "train", FP) == {}
