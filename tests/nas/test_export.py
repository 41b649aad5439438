"""`nas export`: the files it writes load back and reproduce what the study stored."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import optuna
import pytest
import torch
from cli_helpers import run_cli
from optuna.artifacts import get_all_artifact_meta
from safetensors.torch import load_file

import nas
from nas._export import choose_trial, export
from nas.evaluators import EvalContext, get_evaluator, load_dataset
from nas.search_space import Architecture, architecture_from_json

TRAIN = {
    "evaluators": ["naswot", {"name": "train", "settings": {"epochs": 3, "lr": 0.01}}],
    "objectives": ["maximize:val_acc", "macs"],
    "sampler": "random",
    "seed": 3,
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, optuna.Study]:
    """A study of 5 trained candidates (3 epochs on digits), shared by the module's tests."""
    url = f"sqlite:///{tmp_path_factory.mktemp('trained') / 'nas.db'}"
    return url, nas.search({**TRAIN, "trials": 5, "storage": url, "study": "t"}).study


def _val_accuracy(model: torch.nn.Module, arch: Architecture) -> float:
    data = load_dataset("digits")
    with torch.no_grad():
        logits = model(data.x_val.reshape(len(data.x_val), *arch.input_shape))
    return int((logits.argmax(1) == data.y_val).sum()) / len(data.y_val)


def test_trained_export_reloads_to_the_stored_metrics(
    trained: tuple[str, optuna.Study], tmp_path: Path
) -> None:
    url, study = trained
    result = export("t", tmp_path / "model", storage=url)
    chosen = study.trials[result.trial]
    out = tmp_path / "model"
    assert set(result.files) == {
        "model.onnx",
        "arch.json",
        "weights.safetensors",
        "metrics.json",
        "README.md",
    }
    arch = architecture_from_json((out / "arch.json").read_text())
    assert isinstance(arch, Architecture)
    assert arch.arch_id == chosen.user_attrs["arch_id"]
    cost = arch.cost().as_dict()
    for key in ("params", "macs", "bitops", "bytes", "peak_activation_bytes"):
        assert cost[key] == chosen.user_attrs[key], key
    # PyTorch: the written weights give exactly the stored validation accuracy.
    model = arch.build()
    model.load_state_dict(load_file(out / "weights.safetensors"))
    assert _val_accuracy(model.eval(), arch) == chosen.user_attrs["val_acc"]
    # The proxy, rerun on the reloaded architecture, gives the stored score.
    ctx = EvalContext(load_dataset("digits"))
    assert get_evaluator("naswot")(arch, ctx)["naswot"] == pytest.approx(
        chosen.user_attrs["naswot"], rel=1e-9
    )
    # ONNX Runtime on model.onnx: integer kernels round differently from fake quantization.
    data = load_dataset("digits")
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    x = data.x_val.reshape(len(data.x_val), *arch.input_shape).numpy()
    logits = np.concatenate([session.run(None, {"input": x[i : i + 1]})[0] for i in range(len(x))])
    onnx_acc = float((logits.argmax(1) == data.y_val.numpy()).mean())
    assert onnx_acc == pytest.approx(chosen.user_attrs["val_acc"], abs=0.08)
    assert result.reloaded["val_acc_torch"] == chosen.user_attrs["val_acc"]
    assert result.reloaded["val_acc_onnxruntime"] == pytest.approx(onnx_acc)
    written = json.loads((out / "metrics.json").read_text())
    assert written["trial"] == chosen.number
    assert written["objectives"] == {
        "maximize:val_acc": chosen.values[0],
        "minimize:macs": chosen.values[1],
    }
    # The recorded normalization maps the raw 0-16 pixel counts onto the model's inputs.
    norm = written["input"]["normalization"]
    raw = data.x_val * norm["std"][0] + norm["mean"][0]
    assert torch.allclose(raw, raw.round(), atol=1e-4) and raw.min() == 0 and raw.max() == 16
    card = (out / "README.md").read_text()
    assert "x = (raw - mean) / std" in card
    for text in ("## Objectives", "## Cost model", "## Latency", "## Data set", "## Training"):
        assert text in card
    assert "load_state_dict" in card and "InferenceSession" in card
    assert '"epochs": 3' in card


def test_best_is_the_most_accurate_of_the_front_within_the_limits(
    trained: tuple[str, optuna.Study], tmp_path: Path
) -> None:
    _, study = trained
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    limit = sorted(t.user_attrs["macs"] for t in done)[2]  # three candidates fit
    fits = [t for t in done if t.user_attrs["macs"] <= limit]
    top = max(t.user_attrs["val_acc"] for t in fits)
    winner = min(
        (t for t in fits if t.user_attrs["val_acc"] == top), key=lambda t: t.user_attrs["macs"]
    )
    chosen, why = choose_trial(study, limits={"macs": limit})
    assert chosen.number == winner.number
    assert "maximize:val_acc (the first maximized objective)" in why
    assert f"macs<={limit:g}" in why
    cheapest, why = choose_trial(study, prefer="macs")
    assert cheapest.user_attrs["macs"] == min(t.user_attrs["macs"] for t in done)
    assert "(--prefer)" in why


def test_best_never_picks_an_infeasible_trial(db_url: str, tmp_path: Path) -> None:
    # params as a proxy to maximize: the biggest networks are best, and over the limit.
    config = {"evaluators": ["params"], "objectives": ["maximize:params", "macs"]}
    study = nas.search({**config, "trials": 12, "storage": db_url, "sampler": "random"}).study
    sizes = sorted(t.user_attrs["bytes"] for t in study.trials)
    limit = sizes[len(sizes) // 2]
    constrained = nas.search(
        {**config, "trials": 12, "storage": db_url, "study": "c", "sampler": "random",
         "constraints": {"bytes": limit}}
    ).study  # fmt: skip
    infeasible = [t for t in constrained.trials if t.user_attrs["feasible"] is False]
    assert infeasible, "the limit should exclude some trials"
    chosen, _ = choose_trial(constrained)
    assert chosen.user_attrs["bytes"] <= limit
    assert chosen.user_attrs["params"] < max(t.user_attrs["params"] for t in infeasible)


def test_untrained_export_has_no_weights_and_says_so(db_url: str, tmp_path: Path) -> None:
    study = nas.search({"trials": 3, "storage": db_url}).study
    result = export(study, tmp_path / "m", trial=1)
    assert "weights.safetensors" not in result.files
    assert result.reloaded == {}
    card = (tmp_path / "m" / "README.md").read_text()
    assert "Not trained" in card
    session = ort.InferenceSession(str(tmp_path / "m" / "model.onnx"))
    [out] = session.run(None, {"input": np.zeros((1, 1, 8, 8), np.float32)})
    assert out.shape == (1, 10)


def test_batch_size_sets_the_onnx_batch(db_url: str, tmp_path: Path) -> None:
    study = nas.search({"trials": 2, "storage": db_url}).study
    export(study, tmp_path / "m", trial=0, batch_size=4)
    session = ort.InferenceSession(str(tmp_path / "m" / "model.onnx"))
    assert session.get_inputs()[0].shape == [4, 1, 8, 8]


def test_cli_export_and_its_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_cli(["search", "-n", "6", "-q"], capsys)
    assert code == 0, err
    code, out, err = run_cli(["export", "nas", "--best", "--out", "m", "-f", "json"], capsys)
    assert code == 0, err
    written = json.loads(out)
    assert sorted(written["files"]) == ["README.md", "arch.json", "metrics.json", "model.onnx"]
    assert (tmp_path / "m" / "model.onnx").stat().st_size == written["files"]["model.onnx"]
    cases = {
        "neither": (["--out", "x"], "trial: give either --trial N or --best"),
        "both": (["--trial", "1", "--best", "--out", "x"], "give either --trial N or --best"),
        "no such trial": (["--trial", "99", "--out", "x"], "has no trial 99"),
        "bad number": (["--trial", "one", "--out", "x"], "trial: expected"),
        "unknown metric": (["--best", "-c", "foo<=1", "--out", "x"], "foo: no trial has"),
        "nothing fits": (["--best", "--max-bytes", "1", "--out", "x"], "no feasible trial within"),
        "limits with --trial": (["--trial", "1", "--max-bytes", "9", "--out", "x"], "with --best"),
        "no such study": (["--best", "--out", "x", "--study-typo"], ""),
    }
    for name, (args, expected) in cases.items():
        study = "nope" if name == "no such study" else "nas"
        args = [a for a in args if a != "--study-typo"]
        code, out, err = run_cli(["export", study, *args], capsys)
        assert code == 2, (name, out, err)
        assert err.count("\n") == 1 and err.startswith("error:"), (name, err)
        assert expected in err, (name, err)
        assert not (tmp_path / "x").exists(), name


def test_every_trial_uploads_its_files_as_optuna_artifacts(
    trained: tuple[str, optuna.Study],
) -> None:
    _, study = trained
    directory = Path(study.user_attrs["nas.artifacts"])
    assert directory.is_dir()
    for trial in study.trials:
        names = {m.filename for m in get_all_artifact_meta(trial, storage=study._storage)}
        assert names == {"arch.json", "model.onnx", "weights.safetensors"}, trial.number
        assert trial.user_attrs["weights"].startswith("train/")


def test_a_reused_training_brings_its_weights(trained: tuple[str, optuna.Study]) -> None:
    url, study = trained
    again = nas.search({**TRAIN, "trials": 5, "storage": url, "study": "again"})
    assert again.summary.evaluations_run == 0  # same seed, same candidates: all reused
    for trial in again.study.trials:
        names = {m.filename for m in get_all_artifact_meta(trial, storage=again.study._storage)}
        assert "weights.safetensors" in names
    first = {t.user_attrs["arch_id"]: t.user_attrs["weights"] for t in study.trials}
    assert {t.user_attrs["arch_id"]: t.user_attrs["weights"] for t in again.study.trials} == first


def test_artifacts_none_uploads_nothing(db_url: str, tmp_path: Path) -> None:
    study = nas.search({"trials": 2, "storage": db_url, "artifacts": "none"}).study
    assert "nas.artifacts" not in study.user_attrs
    assert get_all_artifact_meta(study.trials[0], storage=study._storage) == []
    assert not (tmp_path / "nas-artifacts").exists()


def test_artifacts_directory_errors_write_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "afile").write_text("x")
    code, _, err = run_cli(["search", "-n", "1", "-q", "--artifacts", "afile"], capsys)
    assert code == 2 and "artifacts: afile is a file" in err
    assert not (tmp_path / "nas.db").exists()
    code, _, err = run_cli(["search", "-n", "1", "-q", "--artifacts", "mine"], capsys)
    assert code == 0, err
    assert (tmp_path / "mine").is_dir()
    code, _, err = run_cli(["search", "-n", "1", "-q", "--artifacts", "other"], capsys)
    assert code == 2 and "keeps its artifacts in" in err


def test_nb201_cells_upload_their_json_but_no_onnx(db_url: str) -> None:
    study = nas.search(
        {"space": "nb201", "dataset": {"name": "synthetic", "settings": {"input_shape": [3, 8, 8]}},
         "evaluators": ["params"], "objectives": ["maximize:params"], "trials": 2,
         "storage": db_url}
    ).study  # fmt: skip
    trial = study.trials[0]
    names = {m.filename for m in get_all_artifact_meta(trial, storage=study._storage)}
    assert names == {"arch.json"}
    assert "no ONNX export" in trial.user_attrs["onnx_error"]


def test_a_worker_elsewhere_without_the_artifact_directory(db_url: str, tmp_path: Path) -> None:
    study = nas.search({"trials": 1, "storage": db_url}).study
    (tmp_path / "afile").write_text("x")
    # As if the study had been created on a machine whose directory is not here.
    study.set_user_attr("nas.artifacts", str(tmp_path / "afile" / "artifacts"))
    with pytest.raises(nas.ConfigError, match=r"artifacts: cannot use .*give a directory or none"):
        nas.join("nas", db_url, trials=1)
    assert len(nas.load_study("nas", db_url).trials) == 1
    joined = nas.join("nas", db_url, trials=1, artifacts="none").study
    [new] = joined.trials[1:]
    assert get_all_artifact_meta(new, storage=joined._storage) == []
