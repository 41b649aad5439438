"""The README's three commands, from a search to a shipped model and a plot, run as written."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from cli_helpers import run_cli

from nas.evaluators import load_dataset

ROOT = Path(__file__).resolve().parents[2]


def _three_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## From a search to a model you ship", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None, "the section has no bash block"
    commands = [shlex.split(line, comments=True) for line in block.group(1).splitlines()]
    return [c for c in commands if c]


def test_the_readme_shows_three_nas_commands() -> None:
    commands = _three_commands()
    assert [c[:2] for c in commands] == [
        ["nas", "search"],
        ["nas", "export"],
        ["nas", "pareto"],
    ]


@pytest.mark.slow
def test_search_export_plot_as_the_readme_says(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for command in _three_commands():
        args = [str(ROOT / a) if a.startswith("examples/") else a for a in command[1:]]
        code, _, err = run_cli(args, capsys)
        assert code == 0, (command, err)
    model = tmp_path / "model"
    assert {p.name for p in model.iterdir()} == {
        "model.onnx",
        "arch.json",
        "weights.safetensors",
        "metrics.json",
        "README.md",
    }
    stored = json.loads((model / "metrics.json").read_text())
    # The shipped file classifies the validation split as well as the search said.
    data = load_dataset("digits")
    session = ort.InferenceSession(str(model / "model.onnx"), providers=["CPUExecutionProvider"])
    x = data.x_val.numpy()
    logits = np.concatenate([session.run(None, {"input": x[i : i + 1]})[0] for i in range(len(x))])
    accuracy = float((logits.argmax(1) == data.y_val.numpy()).mean())
    assert accuracy == pytest.approx(stored["metrics"]["val_acc"], abs=0.05)
    assert accuracy > 0.8
    assert stored["metrics"]["bytes"] <= 40000
    png = tmp_path / "pareto.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
