from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from nas._errors import ConfigError
from nas.evaluators import dataset_infos, load_dataset

N = 20  # images per batch file
FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def _batches(seed: int = 0) -> dict[str, tuple[np.ndarray, list[int]]]:
    """Random uint8 images; the test batch is brighter, so its normalized mean is not 0."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in FILES:
        low = 100 if name == "test_batch" else 0
        data = rng.integers(low, 256, size=(N, 3072), dtype=np.uint8)
        out[name] = (data, [int(v) for v in rng.integers(0, 10, size=N)])
    return out


def write_cifar(root: Path, batches=None, *, py2: bool = False) -> dict:
    """A directory in the official format: data_batch_1..5, test_batch, batches.meta."""
    batches = batches if batches is not None else _batches()
    root.mkdir(parents=True, exist_ok=True)
    for name, (data, labels) in batches.items():
        batch = {"batch_label": name, "data": data, "labels": labels, "filenames": ["x.png"] * N}
        if py2:
            (root / name).write_bytes(py2_pickle(batch))
        else:  # what Python 3 code writes: bytes keys, as read back with encoding="bytes"
            with open(root / name, "wb") as f:
                pickle.dump({k.encode(): v for k, v in batch.items()}, f, protocol=2)
    meta = {b"label_names": [b"airplane"] * 10, b"num_cases_per_batch": N, b"num_vis": 3072}
    (root / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return batches


def py2_pickle(obj) -> bytes:
    """``obj`` as Python 2's cPickle (protocol 2) writes it: the official files' form.

    str is a Python 2 byte string (opcodes U/T); a uint8 array is
    ``numpy.core.multiarray._reconstruct`` plus its state, as numpy 1 pickles it.
    """
    out = bytearray(b"\x80\x02")

    def string(s) -> None:
        b = s.encode("latin1") if isinstance(s, str) else s
        out.extend(b"U" + bytes([len(b)]) if len(b) < 256 else b"T" + struct.pack("<I", len(b)))
        out.extend(b)

    def integer(i: int) -> None:
        out.extend(b"K" + bytes([i]) if 0 <= i < 256 else b"J" + struct.pack("<i", i))

    def dump(o) -> None:
        if isinstance(o, dict):
            out.extend(b"}(")
            for k, v in o.items():
                dump(k)
                dump(v)
            out.extend(b"u")
        elif isinstance(o, list):
            out.extend(b"](")
            for v in o:
                dump(v)
            out.extend(b"e")
        elif isinstance(o, str | bytes):
            string(o)
        elif isinstance(o, int):
            integer(o)
        elif isinstance(o, np.ndarray):
            assert o.dtype == np.uint8
            out.extend(b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n")
            integer(0)
            out.extend(b"\x85")  # TUPLE1
            string("b")
            out.extend(b"\x87R(")  # TUPLE3, REDUCE, MARK
            integer(1)
            out.extend(b"(")
            for d in o.shape:
                integer(d)
            out.extend(b"tcnumpy\ndtype\n")
            string("u1")
            integer(0)
            integer(1)
            out.extend(b"\x87R(")
            integer(3)
            string("|")
            out.extend(b"NNN")
            integer(-1)
            integer(-1)
            integer(0)
            out.extend(b"tb\x89")  # TUPLE, BUILD, NEWFALSE (not Fortran order)
            string(o.tobytes())
            out.extend(b"tb")
        else:
            raise TypeError(type(o))

    dump(obj)
    return bytes(out + b".")


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("cifar") / "cifar-10-batches-py"
    return root, write_cifar(root)


def _train(batches: dict, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    data = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, k + 1)])
    labels = np.concatenate([batches[f"data_batch_{i}"][1] for i in range(1, k + 1)])
    return data, labels


def test_round_trip_shapes_labels_and_values(cifar_dir) -> None:
    root, batches = cifar_dir
    data = load_dataset("cifar10", root=str(root))
    assert data.x_train.shape == (5 * N, 3, 32, 32) and data.x_val.shape == (N, 3, 32, 32)
    assert data.x_train.dtype == data.x_val.dtype == torch.float32
    assert data.y_train.dtype == data.y_val.dtype == torch.int64
    assert data.input_shape == (3, 32, 32) and data.num_classes == 10
    x_tr, y_tr = _train(batches)
    assert data.y_train.tolist() == y_tr.tolist()  # batches 1..5, in order
    assert data.y_val.tolist() == batches["test_batch"][1]
    # Per-channel train statistics, computed independently.
    images = x_tr.reshape(-1, 3, 32, 32).astype(np.float64)
    mean = images.mean(axis=(0, 2, 3), keepdims=True)
    std = images.transpose(1, 0, 2, 3).reshape(3, -1).std(axis=1, ddof=1).reshape(1, 3, 1, 1)
    assert torch.allclose(data.x_train, torch.as_tensor((images - mean) / std).float(), atol=1e-5)
    val = batches["test_batch"][0].reshape(-1, 3, 32, 32).astype(np.float64)
    assert torch.allclose(data.x_val, torch.as_tensor((val - mean) / std).float(), atol=1e-5)


def test_normalization_uses_train_split_only(cifar_dir) -> None:
    data = load_dataset("cifar10", root=str(cifar_dir[0]))
    per_channel = data.x_train.transpose(0, 1).flatten(1)
    assert torch.allclose(per_channel.mean(1), torch.zeros(3), atol=1e-5)
    assert torch.allclose(per_channel.std(1), torch.ones(3), atol=1e-5)
    assert (data.x_val.transpose(0, 1).flatten(1).mean(1) > 0.5).all()  # brighter, not forced to 0


@pytest.mark.parametrize("py2", [False, True])
def test_pixel_layout_is_rgb_planes_row_major(tmp_path: Path, py2: bool) -> None:
    batches = _batches()
    image = np.zeros(3072, dtype=np.uint8)
    where = {0: (1, 2), 1: (3, 4), 2: (31, 0)}  # channel -> (row, column)
    for c, (h, w) in where.items():
        image[c * 1024 + h * 32 + w] = 255
    batches["data_batch_1"][0][0] = image
    write_cifar(tmp_path, batches, py2=py2)
    x = load_dataset("cifar10", root=str(tmp_path)).x_train[0]
    for c, (h, w) in where.items():
        assert (x[c] > x[c].min()).nonzero().tolist() == [[h, w]]


def test_python2_files_load_like_python3_ones(tmp_path: Path) -> None:
    batches = _batches(seed=5)
    write_cifar(tmp_path / "py2", batches, py2=True)
    write_cifar(tmp_path / "py3", batches)
    a = load_dataset("cifar10", root=str(tmp_path / "py2"))
    b = load_dataset("cifar10", root=str(tmp_path / "py3"))
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_val, b.y_val)


def test_train_batches_setting(cifar_dir) -> None:
    root, batches = cifar_dir
    data = load_dataset("cifar10", root=str(root), train_batches=2)
    assert len(data.y_train) == 2 * N and len(data.y_val) == N
    assert data.y_train.tolist() == _train(batches, 2)[1].tolist()
    with pytest.raises(ConfigError) as info:
        load_dataset("cifar10", root=str(root), train_batches=6)
    assert info.value.field == "train_batches"


def test_fingerprint_follows_content_not_location(tmp_path: Path) -> None:
    batches = _batches(seed=1)
    write_cifar(tmp_path / "a", batches)
    write_cifar(tmp_path / "b", batches)
    a = load_dataset("cifar10", root=str(tmp_path / "a"))
    b = load_dataset("cifar10", root=str(tmp_path / "b"))
    assert a.fingerprint == b.fingerprint
    assert (
        a.fingerprint
        != load_dataset("cifar10", root=str(tmp_path / "a"), train_batches=4).fingerprint
    )
    batches["test_batch"][0][0, 0] ^= 1  # one bit of one pixel
    write_cifar(tmp_path / "b", batches)
    assert load_dataset("cifar10", root=str(tmp_path / "b")).fingerprint != a.fingerprint


def test_root_from_the_environment(cifar_dir, monkeypatch: pytest.MonkeyPatch) -> None:
    root = cifar_dir[0]
    monkeypatch.setenv("NAS_CIFAR10_DIR", str(root))
    data = load_dataset("cifar10")
    assert data.settings["root"] == str(root) and len(data.y_train) == 5 * N
    [info] = [i for i in dataset_infos() if i["name"] == "cifar10"]
    assert info["needs"].startswith(f"files in {root} (found")


def _error(**settings) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_dataset("cifar10", **settings)
    assert "\n" not in str(info.value)
    return info.value


def test_missing_directory_names_it_and_the_files(tmp_path: Path) -> None:
    error = _error(root=str(tmp_path / "nowhere"))
    assert error.field == "root"
    assert str(tmp_path / "nowhere") in error.message
    for name in FILES:
        assert name in error.message


def test_missing_default_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NAS_CIFAR10_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    error = _error()
    assert str(tmp_path / "data" / "cifar-10-batches-py") in error.message
    assert "NAS_CIFAR10_DIR" in error.message


def test_missing_batch_file_is_named(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    error = _error(root=str(tmp_path))
    assert f"{tmp_path} has no data_batch_3;" in error.message
    assert "data_batch_1, data_batch_2, data_batch_3, data_batch_4, data_batch_5, test_batch" in (
        error.message
    )
    assert len(load_dataset("cifar10", root=str(tmp_path), train_batches=2).y_train) == 2 * N


def _corrupt(tmp_path: Path, name: str, payload) -> ConfigError:
    write_cifar(tmp_path)
    raw = payload if isinstance(payload, bytes) else pickle.dumps(payload, protocol=2)
    (tmp_path / name).write_bytes(raw)
    error = _error(root=str(tmp_path))
    assert error.field == "root" and str(tmp_path / name) in error.message
    return error


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"not a pickle at all", "cannot unpickle"),
        (b"", "cannot unpickle"),
        ([1, 2, 3], "holds a list;"),
        ({b"data": np.zeros((N, 3072), np.uint8)}, "holds a dict with keys data;"),
        ({b"data": np.zeros((N, 3000), np.uint8), b"labels": [0] * N}, "uint8 (20, 3000)"),
        ({b"data": np.zeros((N, 3072), np.float32), b"labels": [0] * N}, "float32 (20, 3072)"),
        ({b"data": b"\x00" * 3072 * N, b"labels": [0] * N}, "'data' is bytes"),
        ({b"data": np.zeros((N, 3072), np.uint8), b"labels": [0] * (N - 1)}, "not 20 ints"),
        ({b"data": np.zeros((N, 3072), np.uint8), b"labels": ["cat"] * N}, "not 20 ints"),
        ({b"data": np.zeros((N, 3072), np.uint8), b"labels": [10] * N}, "labels range 10..10"),
        ({b"data": np.zeros((0, 3072), np.uint8), b"labels": []}, "holds no images"),
    ],
)
def test_ill_formed_batch_names_the_file_and_the_format(tmp_path, payload, expected) -> None:
    error = _corrupt(tmp_path, "data_batch_2", payload)
    assert expected in error.message
    assert "expected a pickled dict with 'data' a uint8 array of shape (N, 3072)" in error.message


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_a_pickle_that_would_run_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    error = _corrupt(tmp_path, "test_batch", {b"data": _Exploit(marker), b"labels": [0] * N})
    assert "refers to posix.mkdir" in error.message or "refers to nt.mkdir" in error.message
    assert not marker.exists()
