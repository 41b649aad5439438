from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import BaseModel
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from nas._errors import ConfigError, UnknownNameError
from nas.evaluators import DATASETS, Splits, dataset_infos, load_dataset, register_dataset


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_digits_shapes_and_dtypes(digits) -> None:
    assert digits.x_train.shape == (1437, 1, 8, 8)
    assert digits.x_val.shape == (360, 1, 8, 8)
    assert digits.x_train.dtype == torch.float32
    assert digits.y_train.dtype == torch.int64
    assert digits.input_shape == (1, 8, 8)
    assert digits.num_classes == 10
    assert digits.describe() == "digits: 1437 train / 360 val, input (1, 8, 8), 10 classes"


def test_digits_split_is_deterministic_and_seeded(digits) -> None:
    again = load_dataset("digits", split_seed=0, val_fraction=0.2)
    assert torch.equal(again.x_train, digits.x_train)
    assert torch.equal(again.y_val, digits.y_val)
    assert again.fingerprint == digits.fingerprint
    other = load_dataset("digits", split_seed=1)
    assert not torch.equal(other.y_train, digits.y_train)
    assert other.fingerprint != digits.fingerprint


def test_digits_split_is_stratified(digits) -> None:
    train = torch.bincount(digits.y_train, minlength=10).float()
    val = torch.bincount(digits.y_val, minlength=10).float()
    # Each class keeps its share of the whole set in the validation split, up to rounding.
    assert torch.all((val - 0.2 * (train + val)).abs() <= 1)


def test_digits_normalization_uses_train_split_only(digits) -> None:
    bunch = load_digits()
    x_tr, x_va, _, _ = train_test_split(
        bunch.data, bunch.target, test_size=0.2, random_state=0, stratify=bunch.target
    )
    mean, std = x_tr.mean(), x_tr.std(ddof=1)
    assert not np.isclose(mean, bunch.data.mean(), rtol=0, atol=1e-3)  # the check can fail
    expected = torch.as_tensor((x_va - mean) / std, dtype=torch.float32).reshape(-1, 1, 8, 8)
    assert torch.allclose(digits.x_val, expected, atol=1e-5)
    assert abs(float(digits.x_train.mean())) < 1e-5
    assert abs(float(digits.x_train.std()) - 1) < 1e-5


def test_synthetic_is_deterministic_and_learnable() -> None:
    settings = {"input_shape": (3, 4, 4), "num_classes": 3, "n_train": 90, "n_val": 30, "seed": 7}
    a, b = load_dataset("synthetic", **settings), load_dataset("synthetic", **settings)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_val, b.y_val)
    assert a.x_train.shape == (90, 3, 4, 4) and a.input_shape == (3, 4, 4)
    assert torch.bincount(a.y_train).tolist() == [30, 30, 30]
    other = load_dataset("synthetic", **{**settings, "seed": 8})
    assert not torch.equal(other.x_train, a.x_train) and other.fingerprint != a.fingerprint
    assert _nearest_mean_accuracy(a) > 0.9


def _nearest_mean_accuracy(data) -> float:
    x_tr, x_va = data.x_train.flatten(1), data.x_val.flatten(1)
    means = torch.stack([x_tr[data.y_train == c].mean(0) for c in range(data.num_classes)])
    predicted = torch.cdist(x_va, means).argmin(1)
    return float((predicted == data.y_val).float().mean())


def test_unknown_dataset_lists_known_names() -> None:
    with pytest.raises(UnknownNameError, match=r"known: digits, synthetic, cifar10, mnist1d, npz$"):
        load_dataset("cifar-11")


@pytest.mark.parametrize(
    ("name", "settings", "field"),
    [
        ("digits", {"val_fraction": 1.5}, "val_fraction"),
        ("digits", {"shuffle": True}, "shuffle"),
        ("synthetic", {"num_classes": 1}, "num_classes"),
        ("synthetic", {"input_shape": (1, 0)}, "input_shape.1"),
    ],
)
def test_bad_setting_names_the_field(name: str, settings: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_dataset(name, **settings)
    assert info.value.field == field


def test_dataset_infos_lists_every_registered_dataset(monkeypatch, tmp_path) -> None:
    from nas.evaluators._datasets_mnist1d import _generate

    monkeypatch.setenv("NAS_CIFAR10_DIR", str(tmp_path / "no-cifar"))
    generated = _generate.cache_info()
    infos = {info["name"]: info for info in dataset_infos()}
    assert list(infos) == DATASETS.names()
    columns = ["name", "description", "input_shape", "num_classes", "n_train", "n_val", "needs"]
    assert all(list(info) == columns for info in infos.values())
    assert all(info["description"] for info in infos.values())
    assert infos["digits"]["n_train"] == 1437 and infos["digits"]["n_val"] == 360
    assert infos["digits"]["needs"] is None
    assert infos["synthetic"]["input_shape"] == (1, 8, 8)
    # mnist1d is described without being generated.
    assert infos["mnist1d"] | {"description": ""} == {
        **dict.fromkeys(columns),
        "name": "mnist1d",
        "description": "",
        "input_shape": (1, 40),
        "num_classes": 10,
        "n_train": 4000,
        "n_val": 1000,
    }
    assert _generate.cache_info() == generated
    # cifar10 and npz need files: what is known statically, and what is needed.
    cifar = infos["cifar10"]
    assert (cifar["input_shape"], cifar["num_classes"], cifar["n_train"]) == ((3, 32, 32), 10, None)
    assert cifar["needs"].startswith(f"files in {tmp_path / 'no-cifar'} (no such directory")
    assert infos["npz"]["input_shape"] is None and "setting path" in infos["npz"]["needs"]


def test_dataset_infos_never_raises() -> None:
    class Settings(BaseModel):
        path: str

    @register_dataset("needs-a-path", "a plug-in that cannot load at its defaults", Settings)
    def make(settings: Settings) -> Splits:
        raise AssertionError("not called")

    try:
        [info] = [i for i in dataset_infos() if i["name"] == "needs-a-path"]
    finally:
        DATASETS.unregister("needs-a-path")
    assert info["n_train"] is None and info["input_shape"] is None
    assert info["needs"].startswith("cannot load at its defaults: path: Field required")
    assert "\n" not in info["needs"]
