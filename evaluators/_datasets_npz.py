"""``npz``: a user's own arrays from one ``.npz`` file.

The file (``numpy.savez``) holds ``x_train``, ``y_train``, ``x_val`` and
``y_val``: x of shape (N, *input_shape) — channels first, e.g. (N, C, H, W)
for images, (N, C, L) for sequences, (N, F) for vectors — with numbers of any
real or boolean dtype, y of shape (N,) with integer labels 0..num_classes-1.
num_classes is the largest label + 1 unless the ``num_classes`` setting says
more. Unless ``normalize`` is false, x is shifted and scaled by ONE mean and
std (every element of the train split, not per channel or feature), so a
feature that is constant in train cannot make a division by zero.

The file is read with ``allow_pickle=False``: arrays of Python objects are refused.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from nas._errors import ConfigError
from nas.evaluators._datasets import Normalization, Splits, one_line, register_dataset

KEYS = ("x_train", "y_train", "x_val", "y_val")


class NpzSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    path: Path
    num_classes: int | None = Field(default=None, ge=2)
    normalize: bool = True


def _info() -> dict[str, Any]:
    keys = ", ".join(KEYS)
    return {
        "input_shape": None,
        "num_classes": None,
        "n_train": None,
        "n_val": None,
        "needs": f"a .npz file with {keys} (setting path)",
    }


@register_dataset(
    "npz",
    "your arrays from a .npz file (setting path) with x_train, y_train, x_val, y_val; "
    "x normalized by one train mean/std",
    NpzSettings,
    info=_info,
    location_settings=("path",),
)
def _make_npz(settings: NpzSettings) -> Splits:
    path = settings.path.expanduser().absolute()
    if not path.is_file():
        problem = "is a directory" if path.is_dir() else "does not exist"
        raise ConfigError("path", f"{path} {problem}; expected a .npz file with {', '.join(KEYS)}")
    raw = path.read_bytes()
    arrays = _read_arrays(path, raw)
    x_tr, y_tr, x_va, y_va = (arrays[k] for k in KEYS)
    _check_split(path, "train", x_tr, y_tr)
    _check_split(path, "val", x_va, y_va)
    if x_tr.shape[1:] != x_va.shape[1:]:
        raise ConfigError(
            "path",
            f"{path}: samples of x_train have shape {x_tr.shape[1:]} but those of x_val "
            f"{x_va.shape[1:]}; they must match",
        )
    largest = int(max(y_tr.max(), y_va.max()))
    num_classes = _num_classes(path, settings.num_classes, largest)
    x_train = x_tr.astype(np.float64)
    x_val = x_va.astype(np.float64)
    normalization = None
    if settings.normalize:
        mean = x_train.mean()
        std = x_train.std(ddof=1) if x_train.size > 1 else 0.0
        std = std if std > 0 else 1.0  # constant data is only centred
        x_train, x_val = (x_train - mean) / std, (x_val - mean) / std
        normalization = Normalization((float(mean),), (float(std),), "x_train/x_val as stored")
    return Splits(
        torch.from_numpy(x_train.astype(np.float32)),
        torch.from_numpy(y_tr.astype(np.int64)),
        torch.from_numpy(x_val.astype(np.float32)),
        torch.from_numpy(y_va.astype(np.int64)),
        num_classes,
        hashlib.sha256(raw).hexdigest(),
        normalization,
    )


def _read_arrays(path: Path, raw: bytes) -> dict[str, np.ndarray]:
    expected = f"expected a .npz file (numpy.savez) with {', '.join(KEYS)}"
    try:
        archive = np.load(io.BytesIO(raw), allow_pickle=False)
    except Exception as exc:
        reason = one_line(exc)
        raise ConfigError("path", f"{path}: not a .npz file ({reason}); {expected}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ConfigError("path", f"{path}: holds one array (.npy), not named ones; {expected}")
    with archive:
        missing = [k for k in KEYS if k not in archive.files]
        if missing:
            found = ", ".join(archive.files) or "none"
            raise ConfigError(
                "path", f"{path}: no key {', '.join(missing)} (found: {found}); {expected}"
            )
        arrays = {}
        for key in KEYS:
            try:
                arrays[key] = archive[key]
            except Exception as exc:
                raise ConfigError("path", f"{path}: cannot read {key} ({one_line(exc)})") from None
    return arrays


def _check_split(path: Path, split: str, x: np.ndarray, y: np.ndarray) -> None:
    xk, yk = f"x_{split}", f"y_{split}"
    if x.dtype.kind not in "biuf":
        raise ConfigError("path", f"{path}: {xk} has dtype {x.dtype}; expected real numbers")
    if y.dtype.kind not in "iu":
        raise ConfigError(
            "path",
            f"{path}: {yk} has dtype {y.dtype}; expected integer class labels "
            "(e.g. y.astype(numpy.int64))",
        )
    if x.ndim < 2 or 0 in x.shape[1:]:
        raise ConfigError(
            "path",
            f"{path}: {xk} has shape {x.shape}; expected (N, *input_shape) with at least "
            "one non-empty dimension per sample, e.g. (N, 1) for one feature",
        )
    if y.ndim != 1:
        raise ConfigError("path", f"{path}: {yk} has shape {y.shape}; expected (N,) labels")
    if len(x) != len(y):
        raise ConfigError(
            "path", f"{path}: {xk} has {len(x)} samples but {yk} {len(y)} labels; they must match"
        )
    if len(y) == 0:
        raise ConfigError("path", f"{path}: the {split} split is empty ({xk} has 0 samples)")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise ConfigError("path", f"{path}: {xk} holds NaN or infinite values")
    if y.min() < 0:
        raise ConfigError(
            "path", f"{path}: {yk} holds negative labels ({y.min()}); expected 0..num_classes-1"
        )


def _num_classes(path: Path, setting: int | None, largest: int) -> int:
    if setting is not None:
        if setting <= largest:
            raise ConfigError(
                "num_classes", f"{setting} must exceed the largest label in {path}, {largest}"
            )
        return setting
    if largest < 1:
        raise ConfigError(
            "path", f"{path}: every label is 0, a single class; set num_classes for more"
        )
    return largest + 1
