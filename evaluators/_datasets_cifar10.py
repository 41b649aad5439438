"""``cifar10``: CIFAR-10 read from a local directory in the official python format.

The directory is what ``cifar-10-python.tar.gz`` extracts to
(``cifar-10-batches-py``): ``data_batch_1`` ... ``data_batch_5`` and
``test_batch``, each a pickled dict whose ``data`` is a uint8 array of shape
(N, 3072) — the red plane (1024 bytes), then green, then blue, each a 32x32
image row by row — and whose ``labels`` are N ints in 0..9. ``batches.meta``
(the class names) is not needed. The data batches are the train split,
``test_batch`` the validation split.

Nothing is downloaded. The pickles are read with an unpickler that only knows
the few numpy names an array needs, so a file in the directory cannot run code.
"""

from __future__ import annotations

import codecs
import hashlib
import importlib
import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from nas._errors import ConfigError
from nas.evaluators._datasets import Normalization, Splits, one_line, register_dataset

ENV_VAR = "NAS_CIFAR10_DIR"
DEFAULT_ROOT = "./data/cifar-10-batches-py"
NUM_BATCHES = 5
IMAGE_SHAPE = (3, 32, 32)
NUM_CLASSES = 10
_PIXELS = 3 * 32 * 32
_EXPECTED = (
    "a pickled dict with 'data' a uint8 array of shape (N, 3072) "
    "and 'labels' N ints in 0..9 (the official CIFAR-10 python format)"
)


def _default_root() -> Path:
    return Path(os.environ.get(ENV_VAR) or DEFAULT_ROOT)


class Cifar10Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    root: Path = Field(default_factory=_default_root)
    train_batches: int = Field(default=NUM_BATCHES, ge=1, le=NUM_BATCHES)


def _file_names(train_batches: int) -> list[str]:
    return [f"data_batch_{i}" for i in range(1, train_batches + 1)] + ["test_batch"]


def _missing(root: Path, train_batches: int) -> list[str]:
    return [name for name in _file_names(train_batches) if not (root / name).is_file()]


def _info() -> dict[str, Any]:
    root = _default_root().expanduser().absolute()
    missing = _missing(root, NUM_BATCHES)
    state = "found" if not missing else f"missing {', '.join(missing)}"
    state = state if root.is_dir() else "no such directory"
    return {
        "input_shape": IMAGE_SHAPE,
        "num_classes": NUM_CLASSES,
        "n_train": None,
        "n_val": None,
        "needs": f"files in {root} ({state}; setting root or ${ENV_VAR})",
    }


@register_dataset(
    "cifar10",
    "CIFAR-10 32x32 colour images from the official python batches in a local directory: "
    "data_batch_1-5 = train (50,000), test_batch = val (10,000)",
    Cifar10Settings,
    info=_info,
    location_settings=("root",),
)
def _make_cifar10(settings: Cifar10Settings) -> Splits:
    root = settings.root.expanduser().absolute()
    names = _file_names(settings.train_batches)
    missing = _missing(root, settings.train_batches)
    if missing:
        where = f"{root} has no {', '.join(missing)}" if root.is_dir() else f"no directory {root}"
        raise ConfigError(
            "root",
            f"{where}; expected the CIFAR-10 python batches {', '.join(names)} there "
            f"(extract cifar-10-python.tar.gz, then set root or ${ENV_VAR})",
        )
    content = hashlib.sha256()
    batches = [_read_batch(root / name, content) for name in names]
    x_tr = np.concatenate([x for x, _ in batches[:-1]])
    y_tr = np.concatenate([y for _, y in batches[:-1]])
    x_va, y_va = batches[-1]
    mean, std = _channel_stats(x_tr)
    return Splits(
        _normalized(x_tr, mean, std),
        torch.from_numpy(y_tr),
        _normalized(x_va, mean, std),
        torch.from_numpy(y_va),
        NUM_CLASSES,
        content.hexdigest(),
        Normalization(
            tuple(float(m) for m in mean),
            tuple(float(s) for s in std),
            "RGB values 0-255, channels first",
        ),
    )


def _read_batch(path: Path, content: Any) -> tuple[np.ndarray, np.ndarray]:
    """``data`` (N, 3072) uint8 and ``labels`` (N,) int64 of one batch file, checked."""
    raw = path.read_bytes()
    content.update(f"{path.name}:{hashlib.sha256(raw).hexdigest()};".encode())
    try:
        # latin1: the official files are Python 2 pickles; numpy needs their
        # byte strings as latin1 text (keys come back as str, bytes in newer files).
        batch = _BatchUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except _ForbiddenGlobal as exc:
        raise ConfigError(
            "root",
            f"{path}: refers to {exc}, which a CIFAR-10 batch never does; expected {_EXPECTED}",
        ) from None
    except Exception as exc:
        raise ConfigError(
            "root", f"{path}: cannot unpickle ({one_line(exc)}); expected {_EXPECTED}"
        ) from None
    data = _entry(batch, "data")
    labels = _entry(batch, "labels")
    if data is None or labels is None:
        found = f"a {type(batch).__name__}"
        if isinstance(batch, dict):
            keys = sorted(k.decode("latin1") if isinstance(k, bytes) else str(k) for k in batch)
            found = f"a dict with keys {', '.join(keys) or '(none)'}"
        raise ConfigError("root", f"{path}: holds {found}; expected {_EXPECTED}")
    if not (
        isinstance(data, np.ndarray)
        and data.dtype == np.uint8
        and data.ndim == 2
        and data.shape[1] == _PIXELS
    ):
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ConfigError("root", f"{path}: 'data' is {got}; expected {_EXPECTED}")
    if len(data) == 0:
        raise ConfigError("root", f"{path}: holds no images; expected {_EXPECTED}")
    try:
        y = np.asarray(labels)
    except Exception:
        y = np.asarray([], dtype=np.float64)
    if y.ndim != 1 or y.dtype.kind not in "iu" or len(y) != len(data):
        raise ConfigError(
            "root",
            f"{path}: 'labels' are not {len(data)} ints (one per image); expected {_EXPECTED}",
        )
    if y.min() < 0 or y.max() >= NUM_CLASSES:
        raise ConfigError(
            "root", f"{path}: labels range {y.min()}..{y.max()}; expected {_EXPECTED}"
        )
    return data, y.astype(np.int64)


def _entry(batch: Any, key: str) -> Any:
    if not isinstance(batch, dict):
        return None
    return batch.get(key, batch.get(key.encode()))


def _channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (unbiased) std of uint8 images, exactly, from 256-bin histograms."""
    values = np.arange(256, dtype=np.float64)
    planes = x.reshape(len(x), 3, -1)
    mean, std = np.empty(3), np.empty(3)
    for c in range(3):
        counts = np.bincount(planes[:, c].ravel(), minlength=256).astype(np.float64)
        n = counts.sum()
        mean[c] = counts @ values / n
        var = counts @ (values - mean[c]) ** 2 / max(n - 1, 1)
        std[c] = np.sqrt(var) if var > 0 else 1.0  # a constant channel is only centred
    return mean, std


def _normalized(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> torch.Tensor:
    images = torch.from_numpy(x).reshape(len(x), *IMAGE_SHAPE).float()
    images.sub_(torch.as_tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
    return images.div_(torch.as_tensor(std, dtype=torch.float32).view(1, 3, 1, 1))


class _ForbiddenGlobal(Exception):
    pass


def _numpy_global(module: str, name: str) -> Any:
    # numpy 2 moved numpy.core to numpy._core (the old name warns); numpy 1 has only the old.
    for candidate in (module.replace("numpy.core", "numpy._core", 1), module):
        try:
            return getattr(importlib.import_module(candidate), name)
        except (ImportError, AttributeError):
            continue
    raise _ForbiddenGlobal(f"{module}.{name}")


# What pickled numpy arrays refer to, in Python 2 files (numpy.core) and newer ones.
_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),  # bytes in a protocol-2 pickle written by Python 3
    ("__builtin__", "bytes"),  # b"" in the same
    ("builtins", "bytes"),
}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise _ForbiddenGlobal(f"{module}.{name}")
        if module == "_codecs":
            return codecs.encode
        if name == "bytes":
            return bytes
        return _numpy_global(module, name)
