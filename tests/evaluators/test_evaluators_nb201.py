"""The ``nb201`` tabular evaluator, the report-only lookups, and NB201 networks trained.

Every scoring evaluator (the proxies, the table) runs on a sampled cell in
test_evaluators_real_archs.py.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import nas
from nas import ConfigError, EvaluationError
from nas.evaluators import (
    EVALUATORS,
    EvalContext,
    get_evaluator,
    load_dataset,
    nb201_table,
    nb201_test_accuracy,
)
from nas.evaluators._latency import layer_architecture
from nas.evaluators._nb201 import ENV_VAR, default_path
from nas.search_space import CellArchitecture, get_space, sample_random

#: The benchmark's best test accuracy (index 6111, shared/data/nb201/README.md).
BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"  # noqa: E501
HEADER = "index,arch,val_acc_12ep,train_seconds_12ep,test_acc_200ep\n"


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # Small networks on a shared CPU: more intra-op threads than free cores run them
    # many times slower (as in test_evaluators_proxies_extra).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def rows() -> dict[str, dict[str, str]]:
    """The CSV read with the csv module alone, by cell string."""
    with default_path().open(newline="") as f:
        return {row["arch"]: row for row in csv.DictReader(f)}


@pytest.fixture(scope="module")
def ctx() -> EvalContext:
    data = load_dataset("synthetic", input_shape=(3, 32, 32), n_train=16, n_val=8)
    return EvalContext(data, seed=0, batch_size=8)


def _small_table(path: Path, *cells: str) -> Path:
    lines = [f"{i},{cell},{50 + i}.5,{100 + i}.25,{60 + i}.0\n" for i, cell in enumerate(cells)]
    path.write_text(HEADER + "".join(lines))
    return path


def test_values_are_the_table_rows(rows: dict[str, dict[str, str]], ctx: EvalContext) -> None:
    nb201 = get_evaluator("nb201")
    for arch in sample_random(get_space("nb201"), 5, seed=0):
        row = rows[arch.to_string()]
        assert nb201(arch, ctx) == {
            "val_acc_12ep": float(row["val_acc_12ep"]),
            "train_seconds_12ep": float(row["train_seconds_12ep"]),
        }


def test_metrics_and_directions() -> None:
    cls = EVALUATORS.get("nb201")
    assert cls.metrics == ("val_acc_12ep", "train_seconds_12ep")
    assert cls.directions == {"val_acc_12ep": "maximize", "train_seconds_12ep": "minimize"}
    assert "test_acc_200ep" not in cls.metrics  # never seen by a search


def test_test_accuracy_is_for_reports_only(rows: dict[str, dict[str, str]]) -> None:
    assert nb201_test_accuracy(BEST) == 94.3733
    arch = CellArchitecture.from_string(BEST)
    assert nb201_test_accuracy(arch) == float(rows[BEST]["test_acc_200ep"])
    with pytest.raises(ConfigError, match="unknown op 'conv'"):
        nb201_test_accuracy(BEST.replace("nor_conv_1x1", "conv"))


def test_table_has_every_row_and_hands_out_copies() -> None:
    table = nb201_table()
    assert len(table) == 15_625
    assert table[6111]["arch"] == BEST and table[6111]["index"] == 6111
    table[6111]["test_acc_200ep"] = 0.0
    assert nb201_test_accuracy(BEST) == 94.3733


def test_missing_table_is_one_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "none.csv"
    with pytest.raises(ConfigError) as info:
        get_evaluator("nb201", path=str(missing))
    assert info.value.field == "path"
    assert str(missing) in info.value.message and ENV_VAR in info.value.message
    assert "\n" not in str(info.value)


def test_missing_default_table_names_the_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "elsewhere.csv"))
    with pytest.raises(ConfigError, match=f"setting path or \\${ENV_VAR}"):
        get_evaluator("nb201")


def test_search_with_a_missing_table_writes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "nb201.db"
    config = {
        "space": "nb201",
        "evaluators": [{"name": "nb201", "settings": {"path": str(tmp_path / "no.csv")}}],
        "objectives": ["maximize:val_acc_12ep"],
        "storage": f"sqlite:///{db}",
    }
    with pytest.raises(ConfigError) as info:
        nas.search(config)
    assert info.value.field == "evaluators.0.path"
    assert not db.exists()


def test_table_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ctx: EvalContext
) -> None:
    path = _small_table(tmp_path / "t.csv", BEST)
    monkeypatch.setenv(ENV_VAR, str(path))
    assert get_evaluator("nb201")(CellArchitecture.from_string(BEST), ctx) == {
        "val_acc_12ep": 50.5,
        "train_seconds_12ep": 100.25,
    }
    assert nb201_test_accuracy(BEST) == 60.0


def test_malformed_table_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("index,arch,val_acc_12ep\n0,|none~0|,1.0\n")
    with pytest.raises(ConfigError, match="no column train_seconds_12ep, test_acc_200ep"):
        get_evaluator("nb201", path=str(path))
    path.write_text(HEADER + f"0,{BEST},high,1.0,2.0\n")
    with pytest.raises(ConfigError, match="line 2: not a number"):
        get_evaluator("nb201", path=str(path))


def test_cell_missing_from_a_partial_table(tmp_path: Path, ctx: EvalContext) -> None:
    nb201 = get_evaluator("nb201", path=str(_small_table(tmp_path / "t.csv", BEST)))
    other = CellArchitecture(ops=("none",) * 6)
    with pytest.raises(EvaluationError, match=r"^nb201: \|none~0\|.* is not in the table$"):
        nb201(other, ctx)


def test_only_benchmark_cells_are_looked_up(ctx: EvalContext) -> None:
    nb201 = get_evaluator("nb201")
    layers = sample_random(get_space("cnn-small").for_data((3, 32, 32), 10), 1, seed=0)[0]
    with pytest.raises(EvaluationError, match=r"^nb201: the table holds NAS-Bench-201 cells"):
        nb201(layers, ctx)
    small = CellArchitecture.from_string(BEST, channels=8)
    with pytest.raises(EvaluationError, match=r"got channels 8 and 5 cells per stage$"):
        nb201(small, ctx)


def test_fingerprint_is_the_table_not_the_data_or_its_place(tmp_path: Path) -> None:
    digits = EvalContext(load_dataset("digits"), seed=0)
    cifar_like = EvalContext(load_dataset("synthetic", input_shape=(3, 32, 32)), seed=7)
    nb201 = get_evaluator("nb201")
    assert nb201.fingerprint(digits) == nb201.fingerprint(cifar_like)
    copy = tmp_path / "copy.csv"
    copy.write_bytes(default_path().read_bytes())
    assert get_evaluator("nb201", path=str(copy)).fingerprint(digits) == nb201.fingerprint(digits)
    other = get_evaluator("nb201", path=str(_small_table(tmp_path / "t.csv", BEST)))
    assert other.fingerprint(digits) != nb201.fingerprint(digits)


def test_search_end_to_end(tmp_path: Path, rows: dict[str, dict[str, str]]) -> None:
    result = nas.search(
        {
            "space": "nb201",
            "evaluators": ["nb201"],
            "objectives": ["maximize:val_acc_12ep"],
            "trials": 5,
            "storage": f"sqlite:///{tmp_path / 'nb201.db'}",
            "dataset": {
                "name": "synthetic",
                "settings": {
                    "input_shape": [3, 32, 32],
                    "num_classes": 10,
                    "n_train": 64,
                    "n_val": 16,
                },
            },
        }
    )
    trials = result.study.trials
    assert len(trials) == 5 and all(t.state.name == "COMPLETE" for t in trials)
    for trial in trials:
        row = rows[trial.user_attrs["arch"]]
        assert trial.value == float(row["val_acc_12ep"])
        assert trial.user_attrs["train_seconds_12ep"] == float(row["train_seconds_12ep"])
        arch = get_space("nb201").sample(_Fixed(trial.params))
        assert trial.user_attrs["arch_id"] == arch.arch_id
        assert trial.user_attrs["params"] == arch.cost().params
    assert result.study.user_attrs["nas.space"]["kind"] == "nb201"


class _Fixed:
    def __init__(self, params: dict[str, str]) -> None:
        self.params = params

    def suggest_categorical(self, name: str, choices: object) -> str:
        return self.params[name]

    def suggest_int(self, name: str, low: int, high: int) -> int:
        raise KeyError(name)


def test_training_runs_a_nb201_network(ctx: EvalContext) -> None:
    arch = CellArchitecture.from_string(BEST, channels=4, cells_per_stage=1)
    metrics = get_evaluator("train", epochs=1)(arch, ctx)
    assert 0.0 <= metrics["val_acc"] <= 1.0 and metrics["epochs"] == 1


def test_latency_refuses_a_cell_in_one_line() -> None:
    arch = CellArchitecture.from_string(BEST)
    with pytest.raises(EvaluationError, match=r"^latency: NAS-Bench-201 cells have no ONNX export"):
        layer_architecture(arch)
    with pytest.raises(EvaluationError, match=r"^latency: NAS-Bench-201 cells"):
        get_evaluator("latency").measure(arch)
