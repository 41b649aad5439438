"""``mnist1d``: MNIST-1D generated locally by the ``mnist1d`` package, never downloaded.

The package offers two ways in: ``get_dataset`` downloads a pickle from GitHub
(and writes it to the working directory), ``make_dataset`` generates the data
from ten 1-D digit templates and a seed. Only ``make_dataset`` is called here.
With the package's defaults (5,000 samples, 80 % train, seed 42) it makes the
standard set: 4,000 train / 1,000 test signals of 40 samples, 10 classes.

Generation takes about a second (importing the package, which pulls scipy and
matplotlib, about as long again), so the arrays are cached in-process per
settings.
"""

from __future__ import annotations

import functools
import hashlib
import random
import threading
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from nas._errors import ConfigError
from nas.evaluators._datasets import Splits, register_dataset

#: ``mnist1d.get_dataset_args()``'s values (a test checks they still are), kept
#: here so that validating settings and ``nas datasets`` do not import the package.
DEFAULT_SEED = 42
DEFAULT_NUM_SAMPLES = 5000
DEFAULT_TRAIN_SPLIT = 0.8
NUM_CLASSES = 10
SEQ_LENGTH = 40

# make_dataset seeds and draws from numpy's and Python's global generators.
_GLOBAL_RNG_LOCK = threading.Lock()


class Mnist1dSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = Field(default=DEFAULT_SEED, ge=0, lt=2**32)
    num_samples: int = Field(default=DEFAULT_NUM_SAMPLES, ge=2 * NUM_CLASSES, multiple_of=10)
    train_split: float = Field(default=DEFAULT_TRAIN_SPLIT, gt=0.0, lt=1.0)

    @field_validator("train_split")
    @classmethod
    def _both_splits_nonempty(cls, value: float, info: ValidationInfo) -> float:
        n = info.data.get("num_samples")
        if n is not None and not 0 < _n_train(n, value) < n:
            raise ValueError(f"leaves an empty split of {n} samples")
        return value


def _n_train(num_samples: int, train_split: float) -> int:
    """The package's own split index (``int(len(ys) * train_split)``)."""
    return int(num_samples * train_split)


def _info() -> dict[str, Any]:
    n_train = _n_train(DEFAULT_NUM_SAMPLES, DEFAULT_TRAIN_SPLIT)
    return {
        "input_shape": (1, SEQ_LENGTH),
        "num_classes": NUM_CLASSES,
        "n_train": n_train,
        "n_val": DEFAULT_NUM_SAMPLES - n_train,
        "needs": None,
    }


@register_dataset(
    "mnist1d",
    "MNIST-1D: 1-D digit signals (1, 40) generated locally by the mnist1d package, "
    "4,000 train / 1,000 val",
    Mnist1dSettings,
    info=_info,
)
def _make_mnist1d(settings: Mnist1dSettings) -> Splits:
    x_train, y_train, x_val, y_val, content = _generate(
        settings.seed, settings.num_samples, settings.train_split
    )
    # Copies: the cached arrays stay as generated whatever a caller does to the tensors.
    return Splits(
        torch.from_numpy(x_train.copy()),
        torch.from_numpy(y_train.copy()),
        torch.from_numpy(x_val.copy()),
        torch.from_numpy(y_val.copy()),
        NUM_CLASSES,
        content,
    )


@functools.lru_cache(maxsize=8)
def _generate(
    seed: int, num_samples: int, train_split: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """Normalized float32 x (N, 1, 40), int64 y for both splits, and a hash of them."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as exc:
        raise ConfigError(
            "dataset", f"data set 'mnist1d' needs the mnist1d package (pip install mnist1d): {exc}"
        ) from None
    args = get_dataset_args()  # a fresh ObjectView each call
    args.seed, args.num_samples, args.train_split = seed, num_samples, train_split
    with _GLOBAL_RNG_LOCK:
        np_state, py_state = np.random.get_state(), random.getstate()
        try:
            data = make_dataset(args)
        finally:  # leave the caller's global generators as they were
            np.random.set_state(np_state)
            random.setstate(py_state)
    x_tr = np.asarray(data["x"], dtype=np.float64)
    x_va = np.asarray(data["x_test"], dtype=np.float64)
    # make_dataset centres and scales x with all samples; one mean/std from the
    # train split only, on top, gives exactly the raw signals normalized with
    # train statistics (two scalar affine maps compose into one).
    mean, std = x_tr.mean(), x_tr.std(ddof=1)
    arrays = (
        ((x_tr - mean) / std).astype(np.float32).reshape(-1, 1, SEQ_LENGTH),
        np.asarray(data["y"], dtype=np.int64),
        ((x_va - mean) / std).astype(np.float32).reshape(-1, 1, SEQ_LENGTH),
        np.asarray(data["y_test"], dtype=np.int64),
    )
    digest = hashlib.sha256()
    for a in arrays:
        a.flags.writeable = False
        digest.update(f"{a.dtype}{a.shape}".encode())
        digest.update(np.ascontiguousarray(a).tobytes())
    return (*arrays, digest.hexdigest())
