"""``nas profile``: one model's latency (cached per fingerprint) and ``--calibrate``.

The protocol is cut to one process of 20 runs; the warm-up (10 runs and 0.5 s)
cannot be set from the command line, so each measuring invocation costs about a
second and the tests keep their number small.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import assert_rejected, run_cli

import nas
import nas.evaluators._latency as latency_mod
from nas.evaluators._latency import LatencySettings, available_providers, export_arch
from nas.search_space import Architecture, LayerSpec
from nas.storage import Store

FAST = ["--processes", "1", "--runs", "20"]
ARCH = Architecture(
    input_shape=(1, 8, 8),
    num_classes=10,
    stages=((LayerSpec(type="conv3x3", width=8, wbits=8, abits=8),),),
)


def settings() -> LatencySettings:
    """What FAST asks for, as the library sees it."""
    return LatencySettings(processes=1, runs=20)


@pytest.fixture
def runner_calls(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Each start of a measuring process (the real one still runs)."""
    calls: list[Path] = []
    real = latency_mod._run_runner

    def counting(request_path: Path) -> list[dict[str, Any]]:
        calls.append(request_path)
        return real(request_path)

    monkeypatch.setattr(latency_mod, "_run_runner", counting)
    return calls


def profile_json(
    target: Path, url: str, capsys: pytest.CaptureFixture[str], *extra: str
) -> dict[str, Any]:
    code, out, err = run_cli(
        ["profile", str(target), *FAST, "--storage", url, "--format", "json", *extra], capsys
    )
    assert code == 0, err
    row: dict[str, Any] = json.loads(out)
    return row


def test_profile_is_cached_per_fingerprint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], runner_calls: list[Path]
) -> None:
    url = f"sqlite:///{tmp_path / 'nas.db'}"
    target = tmp_path / "arch.json"
    target.write_text(ARCH.to_json())
    first = profile_json(target, url, capsys)
    assert first["cached"] is False and len(runner_calls) == 1
    assert first["model"] == ARCH.arch_id
    assert 0 < first["p10_ms"] <= first["median_ms"] <= first["p90_ms"]
    assert first["latency_ms"] == first["p10_ms"]
    assert (first["processes"], first["runs"], first["threads"]) == (1, 20, 1)
    assert (first["provider"], first["batch_size"], first["precision"]) == ("cpu", 1, "qdq-int4")
    assert first["cpu"] == latency_mod.cpu_model() and first["cores"] >= 1
    assert first["fingerprint"] == settings().fingerprint()[:16]
    assert [k["op"] for k in first["kernel_paths"]] == ["Conv", "Gemm"]

    second = profile_json(target, url, capsys)
    assert second["cached"] is True and len(runner_calls) == 1
    for key in ("latency_ms", "median_ms", "p90_ms", "kernel_paths", "fingerprint"):
        assert second[key] == first[key], key

    again = profile_json(target, url, capsys, "--remeasure")
    assert again["cached"] is False and len(runner_calls) == 2
    # ...and the new measurement replaces the stored one.
    after = profile_json(target, url, capsys)
    assert after["cached"] is True and after["seconds"] == again["seconds"]
    assert after["seconds"] != first["seconds"]

    # The table form of a stored row: the figures, then the kernel of each layer.
    code, out, err = run_cli(["profile", str(target), *FAST, "--storage", url], capsys)
    assert code == 0, err
    assert "latency_ms" in out and "Kernel path of each weighted layer" in out
    assert len(runner_calls) == 2

    with Store(url) as store:
        [record] = store.list_latency_profiles(arch_id=ARCH.arch_id)
        assert record.fingerprint == settings().fingerprint()
        assert store.get_architecture(ARCH.arch_id) is not None


def test_profile_of_an_onnx_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'nas.db'}"
    target = tmp_path / "model.onnx"
    target.write_bytes(export_arch(ARCH, LatencySettings()).serialize())
    row = profile_json(target, url, capsys)
    assert row["model"].startswith("onnx:") and row["cached"] is False
    assert row["latency_ms"] > 0
    # From a file, every Conv/Gemm node is a layer, taken as float (bits unknown).
    assert [k["op"] for k in row["kernel_paths"]] == ["Conv", "Gemm"]
    assert profile_json(target, url, capsys)["cached"] is True


def _bad_cases(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    not_arch = tmp_path / "not-arch.json"
    not_arch.write_text('{"layers": [1, 2]}')
    not_json = tmp_path / "not-json.json"
    not_json.write_text("conv3x3 x 8")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00not an onnx model\xff" * 4)
    arch = tmp_path / "arch.json"
    arch.write_text(ARCH.to_json())
    cases: dict[str, tuple[list[str], str]] = {
        "missing file": ([str(tmp_path / "nosuch.json")], "no such file"),
        "not an architecture": ([str(not_arch)], "not-arch.json"),
        "not JSON": ([str(not_json)], "not-json.json"),
        "garbage onnx": ([str(garbage)], "onnxruntime cannot run the model"),
        "bad precision": ([str(arch), "--precision", "bogus"], "precision"),
        "bad low bits": ([str(arch), "--low-bits", "int2"], "low_bits"),
        "bad runs": ([str(arch), "--runs", "0"], "runs"),
        "no target": ([], "give an ARCH.json or MODEL.onnx, or --calibrate"),
        "target and calibrate": ([str(arch), "--calibrate"], "give no TARGET"),
        "too few models": (["--calibrate", "--models", "2"], "models: must be >= 3"),
        "unknown space": (["--calibrate", "--space", "nope"], "nope"),
        "unknown dataset": (["--calibrate", "--dataset", "nope"], "known: digits"),
    }
    if "cuda" not in available_providers():
        cases["no cuda"] = ([str(arch), "--provider", "cuda"], "onnxruntime-gpu")
    return cases


def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "nas.db"
    url = f"sqlite:///{db}"
    Store(url).close()
    assert_rejected(_bad_cases(tmp_path), ["profile", *FAST, "--storage", url], db, capsys)


def test_calibrate_then_search_in_predict_mode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], runner_calls: list[Path]
) -> None:
    url = f"sqlite:///{tmp_path / 'nas.db'}"
    args = ["profile", "--calibrate", "--space", "cnn-small", "--dataset", "digits"]
    args += ["--models", "3", *FAST, "--storage", url, "--format", "json"]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["models"] == 3 and result["kernels"] > 0
    assert result["new_kernels"] == result["kernels"]
    assert all(isinstance(c, float) for c in result["correction"])
    fingerprint = settings().fingerprint()
    assert result["fingerprint"] == fingerprint[:16]
    with Store(url) as store:
        [predictor] = store.list_latency_predictors()
        assert predictor.fingerprint == fingerprint
        assert (predictor.n_models, predictor.n_kernels) == (3, result["kernels"])
        assert len(store.get_latency_kernels(fingerprint)) == result["kernels"]
        assert len(store.list_latency_profiles(fingerprint=fingerprint)) == 3

    # Calibrating again reuses every kernel and every whole-model profile.
    calls = len(runner_calls)
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    assert json.loads(out)["new_kernels"] == 0 and len(runner_calls) == calls

    # The same protocol in mode predict finds the predictor (mode is not in the fingerprint).
    latency = {"name": "latency", "settings": {"mode": "predict", "processes": 1, "runs": 20}}
    search = nas.search(
        {
            "trials": 2,
            "evaluators": [latency, "naswot"],
            "objectives": ["maximize:naswot", "latency_ms"],
            "storage": url,
            "study": "predicted",
        }
    )
    assert search.summary.complete == 2
    for trial in search.study.trials:
        assert trial.user_attrs["latency_ms"] > 0
