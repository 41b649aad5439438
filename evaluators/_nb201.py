"""``nb201``: NAS-Bench-201's CIFAR-10 table as an evaluator (a tabular benchmark).

The table is a CSV with one row per cell (``index, arch, val_acc_12ep,
train_seconds_12ep, test_acc_200ep``; ``arch`` in the benchmark's string
format). A search sees only what the benchmark's protocol lets it see: the
validation accuracy after 12 epochs (``val_acc_12ep``, %) and the simulated
seconds those epochs cost (``train_seconds_12ep``). The test accuracy after 200
epochs, by which a search is judged, is read only by :func:`nb201_test_accuracy`,
for reports.

The file is found from the setting ``path``, else ``$NAS_NB201_CSV``, else
``shared/data/nb201/nb201_cifar10.csv`` beside the source checkout (a plain
install has no such folder: set one of the other two). It is read once per
process and path.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from nas._errors import ConfigError, EvaluationError
from nas.evaluators._base import Direction, EvalContext, Evaluator, register_evaluator
from nas.evaluators._settings import sha256_json
from nas.search_space._nb201 import CellArchitecture

if TYPE_CHECKING:
    from nas.search_space import AnyArchitecture

ENV_VAR = "NAS_NB201_CSV"
#: Where this project keeps the table: ``shared/data/nb201/`` beside the checkout.
CHECKOUT_PATH = Path(__file__).resolve().parents[2] / "shared/data/nb201/nb201_cifar10.csv"
COLUMNS = ("index", "arch", "val_acc_12ep", "train_seconds_12ep", "test_acc_200ep")
#: The skeleton the table was measured with (channels of the first stage, cells per stage).
BENCHMARK_SKELETON = (16, 5)


def default_path() -> Path:
    """``$NAS_NB201_CSV`` if set, else the table beside the source checkout."""
    return Path(os.environ.get(ENV_VAR) or CHECKOUT_PATH)


@dataclass(frozen=True)
class Table:
    """The rows by cell string, and a hash of the file's bytes."""

    rows: dict[str, dict[str, Any]]
    content: str


def load_table(path: Path | str | None = None) -> Table:
    """The table at ``path`` (default :func:`default_path`), read once per process.

    Raises:
        ConfigError: on the field ``path``: the file is missing or not the table.
    """
    return _read(Path(path or default_path()).expanduser().absolute())


@lru_cache(maxsize=4)
def _read(path: Path) -> Table:
    if not path.is_file():
        raise ConfigError(
            "path",
            f"NAS-Bench-201 table not found: {path}; set the evaluator setting path "
            f"or ${ENV_VAR} to nb201_cifar10.csv",
        )
    raw = path.read_bytes()
    reader = csv.DictReader(io.StringIO(raw.decode()))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ConfigError("path", f"{path} has no column {', '.join(missing)}; needs {COLUMNS}")
    rows: dict[str, dict[str, Any]] = {}
    for line, record in enumerate(reader, start=2):
        try:
            row: dict[str, Any] = {k: float(record[k]) for k in COLUMNS[2:]}
            row.update(index=int(record["index"]), arch=record["arch"])
        except (TypeError, ValueError):
            raise ConfigError("path", f"{path}: line {line}: not a number in {record}") from None
        rows[row["arch"]] = row
    return Table(rows, hashlib.sha256(raw).hexdigest())


def nb201_table(path: Path | str | None = None) -> list[dict[str, Any]]:
    """Every row of the table (copies), in file order: for benchmarks and reports.

    Example:
        >>> from nas.evaluators import nb201_table
        >>> rows = nb201_table()
        >>> len(rows), sorted(rows[0])
        (15625, ['arch', 'index', 'test_acc_200ep', 'train_seconds_12ep', 'val_acc_12ep'])
    """
    return [dict(row) for row in load_table(path).rows.values()]


def nb201_test_accuracy(arch: CellArchitecture | str, path: Path | str | None = None) -> float:
    """Test accuracy (%) after 200 epochs of a cell: what a search is judged by, never sees.

    Example:
        >>> from nas.evaluators import nb201_test_accuracy
        >>> best = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
        >>> nb201_test_accuracy(best)
        94.3733
    """  # noqa: E501
    if isinstance(arch, str):
        arch = CellArchitecture.from_string(arch)
    return float(_row(arch, load_table(path))["test_acc_200ep"])


def _row(arch: CellArchitecture, table: Table) -> dict[str, Any]:
    try:
        return table.rows[arch.to_string()]
    except KeyError:
        raise EvaluationError(f"nb201: {arch.to_string()} is not in the table") from None


class NB201Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    path: Path = Field(default_factory=default_path)


@register_evaluator
class NB201(Evaluator):
    """Look a cell up in NAS-Bench-201's CIFAR-10 table (space ``nb201`` only).

    The table describes each cell in the benchmark's skeleton (16 channels, 5
    cells per stage) trained on CIFAR-10, so a cell of another skeleton is an
    :class:`EvaluationError`; the study's data set does not enter (it is there
    for the proxies a search may add). Hence the fingerprint is the name, the
    version and the hash of the table's bytes: not the data set, not the seed,
    not where the file lies; a search on any data set reuses the lookups.
    The file is read (and checked) when the evaluator is made, so a missing
    table fails before a search writes anything.
    """

    name = "nb201"
    description = "NAS-Bench-201 CIFAR-10 table: val accuracy after 12 epochs and their seconds"
    metrics = ("val_acc_12ep", "train_seconds_12ep")
    directions: ClassVar[dict[str, Direction]] = {
        "val_acc_12ep": "maximize",
        "train_seconds_12ep": "minimize",
    }
    Settings = NB201Settings

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self._content = self._table().content

    def _table(self) -> Table:
        return load_table(self._settings.path)  # type: ignore[attr-defined]

    def fingerprint(self, ctx: EvalContext) -> str:
        return sha256_json({"name": self.name, "version": self.version, "table": self._content})

    def _evaluate(self, arch: AnyArchitecture, ctx: EvalContext) -> dict[str, float]:
        if not isinstance(arch, CellArchitecture):
            raise EvaluationError("nb201: the table holds NAS-Bench-201 cells; use space nb201")
        skeleton = (arch.channels, arch.cells_per_stage)
        if skeleton != BENCHMARK_SKELETON:
            raise EvaluationError(
                f"nb201: the table is for channels 16 and 5 cells per stage, got channels "
                f"{arch.channels} and {arch.cells_per_stage} cells per stage"
            )
        row = _row(arch, self._table())
        return {k: float(row[k]) for k in self.metrics}
