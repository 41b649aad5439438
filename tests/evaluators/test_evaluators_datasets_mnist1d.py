from __future__ import annotations

import random
import socket
import sys
import urllib.request

import numpy as np
import pytest
import requests
import torch

from nas._errors import ConfigError
from nas.evaluators import EvalContext, load_dataset
from nas.evaluators import _datasets_mnist1d as m1d


@pytest.fixture(scope="module")
def standard():
    return load_dataset("mnist1d")


def test_standard_set_shapes_dtypes_and_sizes(standard) -> None:
    assert standard.x_train.shape == (4000, 1, 40) and standard.x_val.shape == (1000, 1, 40)
    assert standard.x_train.dtype == standard.x_val.dtype == torch.float32
    assert standard.y_train.dtype == standard.y_val.dtype == torch.int64
    assert standard.x_train.is_contiguous() and standard.x_val.is_contiguous()
    assert standard.input_shape == (1, 40) and standard.num_classes == 10
    assert set(standard.y_train.tolist()) == set(range(10))
    assert standard.describe() == "mnist1d: 4000 train / 1000 val, input (1, 40), 10 classes"
    assert standard.settings == {"seed": 42, "num_samples": 5000, "train_split": 0.8}


def test_standard_set_is_pinned(standard) -> None:
    # The package's generator for seed 42 (mnist1d 0.0.2.post1); a change here means
    # the package (or scipy) now makes other numbers, and the fingerprint changes too.
    assert standard.y_train[:12].tolist() == [2, 6, 4, 5, 6, 6, 6, 0, 3, 1, 6, 9]
    assert standard.y_val[:12].tolist() == [2, 6, 3, 9, 4, 3, 1, 9, 5, 2, 0, 7]
    first = standard.x_train[0, 0, :4].tolist()
    assert first == pytest.approx([-0.33246, -0.47270, -0.78021, -1.01179], abs=1e-4)


def test_listing_matches_the_standard_set(standard) -> None:
    info = m1d._info()  # what `nas datasets` shows without generating
    assert (info["input_shape"], info["num_classes"], info["n_train"], info["n_val"]) == (
        standard.input_shape,
        standard.num_classes,
        len(standard.y_train),
        len(standard.y_val),
    )


def test_batches_feed_a_1d_convolution(standard) -> None:
    x, y = EvalContext(standard, seed=0, batch_size=32).batch()
    assert x.shape == (32, 1, 40) and y.shape == (32,)
    assert torch.nn.Conv1d(1, 4, 3)(x).shape == (32, 4, 38)


def test_defaults_are_the_packages() -> None:
    from mnist1d.data import get_dataset_args

    args = get_dataset_args()
    assert (args.seed, args.num_samples, args.train_split, args.final_seq_length) == (
        m1d.DEFAULT_SEED,
        m1d.DEFAULT_NUM_SAMPLES,
        m1d.DEFAULT_TRAIN_SPLIT,
        m1d.SEQ_LENGTH,
    )


def test_generation_makes_no_network_call_and_is_deterministic(
    standard, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)  # recorded too: mnist1d.get_dataset swallows every exception
        raise AssertionError(f"network or download call: {args!r}")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    for name in ("get", "post", "request"):
        monkeypatch.setattr(requests, name, refuse)
    monkeypatch.setattr(requests.Session, "request", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    import mnist1d.data

    monkeypatch.setattr(mnist1d.data, "get_dataset", refuse)  # the downloading entry point
    monkeypatch.chdir(tmp_path)  # get_dataset would also write mnist1d_data.pkl here
    np_state, py_state = np.random.get_state(), random.getstate()

    m1d._generate.cache_clear()  # really generate again, offline
    again = load_dataset("mnist1d")

    assert m1d._generate.cache_info().misses == 1
    assert calls == [] and list(tmp_path.iterdir()) == []
    for key in ("x_train", "y_train", "x_val", "y_val"):
        assert torch.equal(getattr(again, key), getattr(standard, key)), key
    assert again.fingerprint == standard.fingerprint
    # make_dataset reseeds numpy's and Python's global generators; they are restored.
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), np_state, strict=True))
    assert random.getstate() == py_state


def test_loads_are_cached_and_independent() -> None:
    load_dataset("mnist1d")
    hits = m1d._generate.cache_info().hits
    again = load_dataset("mnist1d")
    assert m1d._generate.cache_info().hits == hits + 1
    again.x_train.zero_()  # a caller changing its tensors does not change the cache
    assert not torch.equal(load_dataset("mnist1d").x_train, again.x_train)


def test_seed_and_size_settings() -> None:
    small = load_dataset("mnist1d", num_samples=200, seed=1)
    assert small.x_train.shape == (160, 1, 40) and small.x_val.shape == (40, 1, 40)
    m1d._generate.cache_clear()
    assert torch.equal(load_dataset("mnist1d", num_samples=200, seed=1).x_val, small.x_val)
    other = load_dataset("mnist1d", num_samples=200, seed=2)
    assert not torch.equal(other.x_train, small.x_train)
    assert other.fingerprint != small.fingerprint
    split = load_dataset("mnist1d", num_samples=200, seed=1, train_split=0.5)
    assert len(split.y_train) == len(split.y_val) == 100


def test_normalization_uses_train_split_only() -> None:
    from mnist1d.data import get_dataset_args, make_dataset

    data = load_dataset("mnist1d", num_samples=200, seed=3)
    args = get_dataset_args()
    args.num_samples, args.seed = 200, 3
    raw = make_dataset(args)  # globally normalized by the package; our stats undo that
    mean, std = raw["x"].mean(), raw["x"].std(ddof=1)
    expected = torch.as_tensor((raw["x_test"] - mean) / std, dtype=torch.float32)
    assert torch.allclose(data.x_val[:, 0], expected, atol=1e-5)
    assert abs(float(data.x_train.mean())) < 1e-5
    assert abs(float(data.x_train.std()) - 1) < 1e-5
    assert abs(float(data.x_val.mean())) > 1e-3  # not forced to 0 (the check can fail)


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"num_samples": 15}, "num_samples"),
        ({"num_samples": 10}, "num_samples"),
        ({"train_split": 1.0}, "train_split"),
        ({"num_samples": 20, "train_split": 0.01}, "train_split"),
        ({"seed": -1}, "seed"),
        ({"download": True}, "download"),
    ],
)
def test_bad_settings_name_the_field(settings: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_dataset("mnist1d", **settings)
    assert info.value.field == field and "\n" not in str(info.value)


def test_missing_package_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mnist1d.data", None)  # import fails
    with pytest.raises(ConfigError, match=r"pip install mnist1d"):
        load_dataset("mnist1d", num_samples=20, seed=12345)
