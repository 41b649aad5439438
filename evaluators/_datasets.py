"""Data sets that need no network, kept in the :data:`DATASETS` registry.

A registered entry is a :class:`DatasetFactory`: a one-line description, a
pydantic model of its settings and a function that makes the splits. Users call
:func:`load_dataset`; ``nas datasets`` prints :func:`dataset_infos`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from nas._registry import Registry
from nas.evaluators._settings import sha256_json, validate_settings


@dataclass(frozen=True, eq=False)
class Dataset:
    """Train and validation splits: float32 ``x`` of shape (N, *input_shape), int64 ``y``.

    ``fingerprint`` is a hash of the name and every setting (defaults included),
    so two loads with the same fingerprint hold the same numbers.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    input_shape: tuple[int, ...]
    num_classes: int
    fingerprint: str
    settings: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """One line, e.g. ``digits: 1437 train / 360 val, input (1, 8, 8), 10 classes``."""
        return (
            f"{self.name}: {len(self.y_train)} train / {len(self.y_val)} val, "
            f"input {self.input_shape}, {self.num_classes} classes"
        )


class Splits(NamedTuple):
    """What a factory makes; :func:`load_dataset` wraps it into a :class:`Dataset`."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    num_classes: int


@dataclass(frozen=True)
class DatasetFactory:
    """A registered data set: its description, settings model and split maker."""

    description: str
    settings_model: type[BaseModel]
    make: Callable[[Any], Splits]


DATASETS: Registry[DatasetFactory] = Registry("dataset")


def register_dataset(
    name: str, description: str, settings_model: type[BaseModel]
) -> Callable[[Callable[[Any], Splits]], Callable[[Any], Splits]]:
    """Decorator registering ``make(settings) -> Splits`` as data set ``name``."""

    def wrap(make: Callable[[Any], Splits]) -> Callable[[Any], Splits]:
        DATASETS.register(name, DatasetFactory(description, settings_model, make))
        return make

    return wrap


def load_dataset(name: str, **settings: Any) -> Dataset:
    """Load a registered data set; unknown names and settings raise :class:`ConfigError`.

    Example:
        >>> from nas.evaluators import load_dataset
        >>> data = load_dataset("synthetic", n_train=64, n_val=16)
        >>> data.x_train.shape, data.num_classes
        (torch.Size([64, 1, 8, 8]), 10)
    """
    factory = DATASETS.get(name, field="dataset")
    parsed = validate_settings(factory.settings_model, settings, f"dataset {name!r}")
    splits = factory.make(parsed)
    resolved = parsed.model_dump(mode="json")
    return Dataset(
        name=name,
        x_train=splits.x_train,
        y_train=splits.y_train,
        x_val=splits.x_val,
        y_val=splits.y_val,
        input_shape=tuple(splits.x_train.shape[1:]),
        num_classes=splits.num_classes,
        fingerprint=sha256_json({"name": name, "settings": resolved}),
        settings=resolved,
    )


def dataset_infos() -> list[dict[str, Any]]:
    """Name, description, input shape, classes and split sizes of each data set at its defaults."""
    infos = []
    for name, factory in DATASETS.items():
        data = load_dataset(name)
        infos.append(
            {
                "name": name,
                "description": factory.description,
                "input_shape": data.input_shape,
                "num_classes": data.num_classes,
                "n_train": len(data.y_train),
                "n_val": len(data.y_val),
            }
        )
    return infos


class DigitsSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    val_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    split_seed: int = 0


@register_dataset(
    "digits",
    "scikit-learn's bundled 8x8 handwritten digits (1797 images), stratified split",
    DigitsSettings,
)
def _make_digits(settings: DigitsSettings) -> Splits:
    # Imported here: scikit-learn is only needed by this data set.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x_tr, x_va, y_tr, y_va = train_test_split(
        bunch.data,
        bunch.target,
        test_size=settings.val_fraction,
        random_state=settings.split_seed,
        stratify=bunch.target,
    )
    x_train = torch.as_tensor(x_tr, dtype=torch.float32).reshape(-1, 1, 8, 8)
    x_val = torch.as_tensor(x_va, dtype=torch.float32).reshape(-1, 1, 8, 8)
    # One mean/std for the single channel, from the train split only: per-pixel
    # stats would divide by zero on the always-blank border pixels.
    mean, std = x_train.mean(), x_train.std()
    return Splits(
        (x_train - mean) / std,
        torch.as_tensor(y_tr, dtype=torch.int64),
        (x_val - mean) / std,
        torch.as_tensor(y_va, dtype=torch.int64),
        10,
    )


class SyntheticSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    input_shape: tuple[PositiveInt, ...] = Field(default=(1, 8, 8), min_length=1)
    num_classes: int = Field(default=10, ge=2)
    n_train: int = Field(default=512, ge=1)
    n_val: int = Field(default=128, ge=1)
    seed: int = 0


@register_dataset(
    "synthetic",
    "Gaussian noise around one random prototype per class, generated from a seed",
    SyntheticSettings,
)
def _make_synthetic(settings: SyntheticSettings) -> Splits:
    gen = torch.Generator().manual_seed(settings.seed)
    prototypes = torch.randn((settings.num_classes, *settings.input_shape), generator=gen)
    x_train, y_train = _sample_classes(prototypes, settings.n_train, gen)
    x_val, y_val = _sample_classes(prototypes, settings.n_val, gen)
    return Splits(x_train, y_train, x_val, y_val, settings.num_classes)


def _sample_classes(
    prototypes: torch.Tensor, n: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Balanced, shuffled labels; each x is its class prototype plus unit noise."""
    num_classes = prototypes.shape[0]
    y = (torch.arange(n) % num_classes)[torch.randperm(n, generator=gen)]
    x = prototypes[y] + torch.randn((n, *prototypes.shape[1:]), generator=gen)
    return x, y
