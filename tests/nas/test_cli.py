from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from cli_helpers import assert_rejected, run_cli


@pytest.fixture
def searched(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    code, _, err = run_cli(["search", "-n", "4", "-q"], capsys)
    assert code == 0, err
    return tmp_path / "nas.db"


def test_search_with_no_arguments_writes_nas_db(searched: Path) -> None:
    assert searched.is_file()


def test_search_prints_front_and_summary(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["search", "-n", "3", "-q", "--study", "s"], capsys)
    assert code == 0
    assert "Pareto front of study 's'" in out and "naswot" in out
    assert "3 trials complete, 0 failed" in err
    code, _, err = run_cli(["search", "-n", "3", "-q", "--study", "t"], capsys)
    assert "evaluations: 0 run, 3 of 3 reused" in err


def test_status_and_pareto_json(searched: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["status", "--format", "json"], capsys)
    assert code == 0
    [row] = json.loads(out)
    assert row["study"] == "nas" and row["complete"] == 4
    code, out, _ = run_cli(["status", "nas", "-f", "json"], capsys)
    assert json.loads(out)["space"] == "cnn-small"
    code, out, _ = run_cli(["pareto", "nas", "-f", "json"], capsys)
    rows = json.loads(out)
    assert rows and {"trial", "naswot", "macs", "arch_id", "arch"} <= set(rows[0])


@pytest.mark.parametrize("command", ["spaces", "evaluators", "datasets"])
def test_listings(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli([command, "--format", "json"], capsys)
    rows = json.loads(out)
    assert code == 0 and rows and all(r["description"] for r in rows)
    code, out, _ = run_cli([command], capsys)
    assert code == 0 and rows[0]["name"] in out


@pytest.mark.parametrize(
    "command", ["search", "status", "pareto", "spaces", "export", "report", "dashboard"]
)
def test_help_has_an_example(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli([command, "--help"], capsys)
    assert code == 0 and "Example: nas" in out


SPACE_OK = """
name: tiny
input: {shape: [1, 8, 8], num_classes: 10}
stages:
  - depth: [1, 2]
    widths: [8]
    layers: [conv3x3]
"""

BAD_SPACES = {
    "depth": (SPACE_OK.replace("[1, 2]", "[3, 1]"), "stages.0.depth", "min <= max"),
    "layer": (SPACE_OK.replace("[conv3x3]", "[conv7x7]"), "stages.0.layers.0", "known: conv3x3"),
    "bits": (SPACE_OK + "    wbits: [3]\n", "stages.0.wbits", "{2, 4, 8, 16, 32}"),
    "collapse": (
        SPACE_OK.replace("layers: [conv3x3]", "layers: [conv3x3]\n    stride: 16"),
        "stages.0.stride",
        "collapses",
    ),
}


def _bad_cases(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    cases: dict[str, tuple[list[str], str]] = {
        "missing config": (["nosuch.yaml"], "config: file not found"),
        "unknown dataset": (["--dataset", "imagenet"], "known: digits"),
        "unknown evaluator": (["-e", "nope"], "known: synflow"),
        "unknown sampler": (["--sampler", "cmaes"], "known: random, tpe, nsga2"),
        "unknown metric": (["-o", "accuracy"], "objectives.0: unknown metric"),
        "bad trials": (["-n", "0"], "trials: Input should be greater than or equal to 1"),
        "bad url": (["--storage", "sqlite:////nonexistent/dir/x.db"], "storage: cannot open"),
        "bad driver": (["--storage", "nosuchdb://x"], "storage: cannot open"),
        "unknown space": (["--space", "resnet"], "built-in: cnn-small"),
    }
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("trials: [1,\n")
    cases["invalid yaml"] = ([str(bad_yaml)], "invalid YAML")
    extra = tmp_path / "extra.yaml"
    extra.write_text("trails: 5\n")
    cases["unknown field"] = ([str(extra)], "trails: unknown field")
    for name, (text, _field, allowed) in BAD_SPACES.items():
        path = tmp_path / f"space-{name}.yaml"
        path.write_text(text)
        cases[f"space {name}"] = (["--space", str(path)], allowed)
    return cases


def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    searched: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert_rejected(_bad_cases(tmp_path), ["search", "-q"], searched, capsys)


def test_bad_input_creates_no_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = run_cli(["search", "--dataset", "nope"], capsys)
    assert code == 2 and not (tmp_path / "nas.db").exists()


def test_space_errors_name_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name, (text, field, allowed) in BAD_SPACES.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        code, _, err = run_cli(["search", "--space", str(path)], capsys)
        assert code == 2 and field in err and allowed in err, (name, err)


def test_unknown_study(searched: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["pareto", "nosuch"], capsys)
    assert code == 2 and "no study 'nosuch'" in err and "studies: nas" in err


def test_config_file_and_flags_override_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "search.yaml"
    config.write_text(
        "space: mlp-small\nevaluators: [synflow]\nobjectives: [maximize:synflow, bytes]\n"
        "trials: 2\nstudy: from-file\nsampler: random\n"
    )
    code, _, err = run_cli(["search", str(config), "-n", "3", "-q"], capsys)
    assert code == 0, err
    code, out, _ = run_cli(["status", "from-file", "-f", "json"], capsys)
    status = json.loads(out)
    assert status["complete"] == 3 and status["space"] == "mlp-small"
    assert status["objectives"] == ["maximize:synflow", "minimize:bytes"]


def test_console_script_exit_code_without_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["nas", "search", "--dataset", "nope"], capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: dataset") and "Traceback" not in proc.stderr
