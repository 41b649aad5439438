from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from nas._errors import ConfigError
from nas.evaluators import load_dataset


def arrays(**overrides) -> dict[str, np.ndarray]:
    """Sequences (N, 2, 16) with labels 0..3; the val split is shifted by +1."""
    rng = np.random.default_rng(0)
    out = {
        "x_train": rng.normal(3.0, 2.0, size=(40, 2, 16)).astype(np.float32),
        "y_train": np.arange(40) % 4,
        "x_val": rng.normal(4.0, 2.0, size=(12, 2, 16)),
        "y_val": np.arange(12, dtype=np.uint8) % 4,
    }
    out.update(overrides)
    return {k: v for k, v in out.items() if v is not None}


def write(tmp_path: Path, name: str = "data.npz", **overrides) -> Path:
    path = tmp_path / name
    np.savez(path, **arrays(**overrides))
    return path


def test_happy_path(tmp_path: Path) -> None:
    data = load_dataset("npz", path=str(write(tmp_path)))
    assert data.x_train.shape == (40, 2, 16) and data.x_val.shape == (12, 2, 16)
    assert data.x_train.dtype == data.x_val.dtype == torch.float32
    assert data.y_train.dtype == data.y_val.dtype == torch.int64
    assert data.input_shape == (2, 16) and data.num_classes == 4
    assert data.y_val.tolist() == (np.arange(12) % 4).tolist()
    assert data.describe() == "npz: 40 train / 12 val, input (2, 16), 4 classes"
    assert data.settings["normalize"] is True and data.settings["num_classes"] is None


def test_normalization_uses_one_train_mean_and_std(tmp_path: Path) -> None:
    raw = arrays()
    data = load_dataset("npz", path=str(write(tmp_path)))
    mean, std = raw["x_train"].astype(np.float64).mean(), raw["x_train"].std(ddof=1)
    expected = torch.as_tensor((raw["x_val"] - mean) / std, dtype=torch.float32)
    assert torch.allclose(data.x_val, expected, atol=1e-5)
    assert abs(float(data.x_train.mean())) < 1e-5 and abs(float(data.x_train.std()) - 1) < 1e-5
    assert float(data.x_val.mean()) > 0.2  # the val split keeps its shift (not forced to 0)
    plain = load_dataset("npz", path=str(tmp_path / "data.npz"), normalize=False)
    assert torch.equal(plain.x_train, torch.as_tensor(raw["x_train"]))
    assert torch.allclose(plain.x_val, torch.as_tensor(raw["x_val"], dtype=torch.float32))


def test_integer_and_vector_inputs(tmp_path: Path) -> None:
    x = np.arange(30, dtype=np.uint8).reshape(10, 3)
    path = write(tmp_path, x_train=x, y_train=np.arange(10) % 2, x_val=x[:4], y_val=np.ones(4, int))
    data = load_dataset("npz", path=str(path))
    assert data.input_shape == (3,) and data.num_classes == 2
    assert data.x_train.dtype == torch.float32
    ones = {"x_train": np.ones((5, 1)), "x_val": np.ones((2, 1)), "y_val": np.arange(2)}
    constant = write(tmp_path, "c.npz", y_train=np.arange(5) % 2, **ones)
    assert torch.equal(load_dataset("npz", path=str(constant)).x_train, torch.zeros(5, 1))


def test_num_classes_setting(tmp_path: Path) -> None:
    path = str(write(tmp_path))
    assert load_dataset("npz", path=path, num_classes=10).num_classes == 10
    with pytest.raises(ConfigError) as info:
        load_dataset("npz", path=path, num_classes=3)
    assert info.value.field == "num_classes" and "largest label" in info.value.message
    with pytest.raises(ConfigError) as info:
        load_dataset("npz", path=path, num_classes=1)
    assert info.value.field == "num_classes"


def test_fingerprint_follows_content_not_location(tmp_path: Path) -> None:
    a = load_dataset("npz", path=str(write(tmp_path, "a.npz")))
    b = load_dataset("npz", path=str(write(tmp_path, "b.npz")))
    assert a.fingerprint == b.fingerprint
    assert load_dataset("npz", path=str(tmp_path / "a.npz"), normalize=False).fingerprint != (
        a.fingerprint
    )
    changed = write(tmp_path, "b.npz", y_val=np.arange(12) % 3)
    assert load_dataset("npz", path=str(changed)).fingerprint != a.fingerprint


def test_path_is_required() -> None:
    with pytest.raises(ConfigError) as info:
        load_dataset("npz")
    assert info.value.field == "path"


def _error(path: Path, **settings) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_dataset("npz", path=str(path), **settings)
    assert info.value.field == "path" and str(path) in info.value.message
    assert "\n" not in str(info.value)
    return info.value


def test_missing_file_and_directory(tmp_path: Path) -> None:
    assert "does not exist" in _error(tmp_path / "nope.npz").message
    assert "is a directory" in _error(tmp_path).message


def test_not_an_npz(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"hello")
    assert "not a .npz file" in _error(garbage).message
    single = tmp_path / "one.npy"
    np.save(single, np.zeros(3))
    assert "holds one array (.npy)" in _error(single).message


def test_missing_key_lists_the_expected_ones(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x_train=np.zeros((2, 1)), y_train=np.zeros(2, int), x_test=np.zeros((1, 1)))
    message = _error(path).message
    assert "no key x_val, y_val (found: x_train, y_train, x_test)" in message
    assert "with x_train, y_train, x_val, y_val" in message


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"x_train": np.array([["a"], ["b"]] * 20)},
            "x_train has dtype <U1; expected real numbers",
        ),
        ({"x_val": np.ones((12, 2, 16), complex)}, "x_val has dtype complex128"),
        ({"y_train": np.zeros(40)}, "y_train has dtype float64; expected integer class labels"),
        ({"y_val": np.array([True] * 12)}, "y_val has dtype bool"),
        ({"y_train": np.zeros((40, 1), int)}, "y_train has shape (40, 1); expected (N,)"),
        ({"y_train": np.zeros(39, int)}, "x_train has 40 samples but y_train 39 labels"),
        ({"y_val": np.zeros(11, int)}, "x_val has 12 samples but y_val 11 labels"),
        ({"x_val": np.zeros((12, 2, 15))}, "x_train have shape (2, 16) but those of x_val (2, 15)"),
        ({"y_train": np.arange(40) - 1}, "y_train holds negative labels (-1)"),
        ({"x_val": np.zeros((0, 2, 16)), "y_val": np.zeros(0, int)}, "the val split is empty"),
        ({"x_train": np.zeros(40), "x_val": np.zeros(12)}, "x_train has shape (40,)"),
        ({"x_train": np.zeros((40, 0))}, "x_train has shape (40, 0)"),
        ({"x_train": np.full((40, 2, 16), np.nan)}, "x_train holds NaN or infinite values"),
        ({"y_train": np.zeros(40, int), "y_val": np.zeros(12, int)}, "every label is 0"),
        ({"x_train": np.array([None] * 40, dtype=object)}, "cannot read x_train"),
    ],
)
def test_bad_arrays_name_the_key(tmp_path: Path, overrides: dict, expected: str) -> None:
    assert expected in _error(write(tmp_path, **overrides)).message
