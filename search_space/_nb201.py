"""NAS-Bench-201's cell space: 6 edges x 5 ops, in the benchmark's own string format.

A cell is a DAG of four nodes; node ``j`` is the sum of one op on each earlier
node. The six edges, in the official order, are ``1<-0 | 2<-0, 2<-1 | 3<-0,
3<-1, 3<-2``, written ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` (Dong & Yang,
ICLR 2020). A :class:`CellArchitecture` is one cell in the benchmark's skeleton
(3 stages of 5 cells, 16/32/64 channels, residual reductions); a
:class:`CellSpace` samples the six ops through ``trial.suggest_categorical``.

``arch_id`` hashes the ops as written, not the computation graph: the benchmark
lists isomorphic cells separately (15,625 strings for 6,466 distinct graphs),
each with its own row, and they differ in parameters anyway (an op on an edge
whose result is never used still has its weights).
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nas._errors import ConfigError
from nas.search_space._layers import RANK_NAMES
from nas.search_space._spec import InputSpec

if TYPE_CHECKING:
    import torch.nn

    from nas.search_space._architecture import Architecture
    from nas.search_space._cost import Cost
    from nas.search_space._space import TrialLike

#: The five ops of an edge; ``none`` is the zero op (the edge is absent).
NB201_OPS: tuple[str, ...] = (
    "none",
    "skip_connect",
    "nor_conv_1x1",
    "nor_conv_3x3",
    "avg_pool_3x3",
)
#: ``(to, from)`` node of each edge, in the order of the string and of ``ops``.
NB201_EDGES: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))

Ops = tuple[str, str, str, str, str, str]


class CellArchitecture(BaseModel):
    """One NAS-Bench-201 cell in the benchmark's network skeleton.

    ``channels`` is the first stage's width (doubled by each of the two
    reductions) and ``cells_per_stage`` the number of cells per stage: 16 and 5
    in the benchmark. The input's height and width must be multiples of 4 (each
    reduction halves them, and its shortcut's 2x2 pooling must agree with its
    strided convolution).

    Example:
        >>> from nas.search_space import CellArchitecture
        >>> s = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
        >>> arch = CellArchitecture.from_string(s)
        >>> arch.to_string() == s, len(arch.arch_id)
        (True, 16)
        >>> arch.cost().params == 73_306 + 243_040 * 3
        True
    """  # noqa: E501

    model_config = ConfigDict(frozen=True, extra="forbid")

    ops: Ops
    input_shape: tuple[int, ...] = (3, 32, 32)
    num_classes: int = Field(default=10, ge=2)
    channels: int = Field(default=16, ge=1)
    cells_per_stage: int = Field(default=5, ge=1)

    @field_validator("ops")
    @classmethod
    def _known_ops(cls, ops: Ops) -> Ops:
        for i, op in enumerate(ops):
            if op not in NB201_OPS:
                raise ValueError(f"edge {i}: unknown op {op!r}; allowed: {', '.join(NB201_OPS)}")
        return ops

    @model_validator(mode="after")
    def _image_input(self) -> CellArchitecture:
        check_cell_input(self.input_shape)
        return self

    @classmethod
    def from_string(cls, text: str, **skeleton: Any) -> CellArchitecture:
        """The cell written ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``; ``skeleton`` sets the
        other fields (``input_shape``, ``num_classes``, ``channels``, ``cells_per_stage``).

        Raises:
            ConfigError: ``text`` is not in that exact format, or names an unknown op.
        """
        return cls(ops=parse_cell(text), **skeleton)

    def to_string(self) -> str:
        """The cell in NAS-Bench-201's format (the key of the benchmark's table)."""
        edges = list(zip(self.ops, NB201_EDGES, strict=True))
        nodes = [[f"{op}~{src}" for op, (dst, src) in edges if dst == j] for j in (1, 2, 3)]
        return "+".join("|" + "|".join(node) + "|" for node in nodes)

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no whitespace; :meth:`from_json` reads it back."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> CellArchitecture:
        return cls.model_validate_json(text)

    @cached_property
    def arch_id(self) -> str:
        """16 hex digits of SHA-256 over the canonical JSON (the ops as written, the skeleton)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def summary(self) -> str:
        """The cell string (the skeleton is the same for every cell of a space)."""
        return self.to_string()

    def build(self) -> torch.nn.Module:
        """The NAS-Bench-201 network of this cell (see :mod:`._nb201_network`)."""
        from nas.search_space._nb201_network import build_cell_network

        return build_cell_network(self)

    def cost(self) -> Cost:
        """Params, MACs, BitOps, bytes and peak activation bytes, computed without building it."""
        from nas.search_space._nb201_network import cell_cost

        return cell_cost(self)


def parse_cell(text: str) -> Ops:
    """The six ops of a cell string, each checked; anything else is a one-line ConfigError."""
    form = "|op~0|+|op~0|op~1|+|op~0|op~1|op~2|"
    nodes = text.split("+")
    if len(nodes) != 3:
        raise ConfigError("arch", f"a cell is 3 nodes joined by '+' ({form}), got {text!r}")
    ops: list[str] = []
    for j, node in enumerate(nodes, start=1):
        if not (node.startswith("|") and node.endswith("|")) or len(node) < 2:
            raise ConfigError("arch", f"node {j} must be written |op~i|...|, got {node!r}")
        tokens = node[1:-1].split("|")
        if len(tokens) != j:
            raise ConfigError("arch", f"node {j} needs {j} inputs, got {len(tokens)} in {node!r}")
        for src, token in enumerate(tokens):
            op, sep, index = token.partition("~")
            if not sep or index != str(src):
                raise ConfigError("arch", f"node {j}: expected 'op~{src}', got {token!r}")
            if op not in NB201_OPS:
                raise ConfigError(
                    "arch", f"node {j}: unknown op {op!r}; allowed: {', '.join(NB201_OPS)}"
                )
            ops.append(op)
    return (ops[0], ops[1], ops[2], ops[3], ops[4], ops[5])


def check_cell_input(shape: tuple[int, ...]) -> None:
    """An image whose height and width survive two halvings evenly (multiples of 4)."""
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"a cell network needs {RANK_NAMES[3]} input, got {list(shape)}")
    if shape[1] % 4 or shape[2] % 4:
        raise ValueError(
            f"a cell network halves height and width twice, so both must be multiples of 4, "
            f"got {shape[1]}x{shape[2]}"
        )


class CellSpace(BaseModel):
    """The NAS-Bench-201 space: each of the six edges takes one of :data:`NB201_OPS`.

    ``kind: nb201`` tells :func:`~nas.search_space.space_from_dict` that a mapping
    is a cell space. ``input`` is the data's shape and classes (set by
    :meth:`for_data`); the skeleton (``channels``, ``cells_per_stage``) stays.

    Example:
        >>> import optuna
        >>> from nas.search_space import get_space
        >>> space = get_space("nb201")
        >>> study = optuna.create_study()
        >>> arch = space.sample(study.ask())
        >>> study.enqueue_trial(space.to_params(arch))
        >>> space.sample(study.ask()) == arch, space.size()
        (True, 15625)
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["nb201"] = "nb201"
    name: str = "nb201"
    description: str = (
        "NAS-Bench-201 cell: 6 edges x 5 ops (15,625 cells), 3 stages of 5 cells at 16/32/64"
    )
    input: InputSpec = InputSpec(shape=(3, 32, 32), num_classes=10)
    channels: int = Field(default=16, ge=1)
    cells_per_stage: int = Field(default=5, ge=1)

    @model_validator(mode="after")
    def _image_input(self) -> CellSpace:
        try:
            check_cell_input(self.input.shape)
        except ValueError as exc:
            raise ConfigError("input.shape", str(exc)) from None
        return self

    def sample(self, trial: TrialLike) -> CellArchitecture:
        """One cell, choosing each edge's op with ``trial.suggest_categorical("edge{i}", ...)``."""
        ops = [trial.suggest_categorical(f"edge{i}", NB201_OPS) for i in range(len(NB201_EDGES))]
        return CellArchitecture(
            ops=(ops[0], ops[1], ops[2], ops[3], ops[4], ops[5]),
            input_shape=self.input.shape,
            num_classes=self.input.num_classes,
            channels=self.channels,
            cells_per_stage=self.cells_per_stage,
        )

    def to_params(self, arch: CellArchitecture | Architecture) -> dict[str, Any]:
        """The trial params that make :meth:`sample` return ``arch``.

        Raises:
            ConfigError: ``arch`` is not a point of this space.
        """
        if not isinstance(arch, CellArchitecture):
            raise ConfigError(
                "architecture", f"not a point of space {self.name!r}: not a NAS-Bench-201 cell"
            )
        params = {f"edge{i}": op for i, op in enumerate(arch.ops)}
        if self.sample(_Answers(params)) != arch:
            raise ConfigError(
                "architecture",
                f"not a point of space {self.name!r}: another skeleton or input "
                f"(input {list(arch.input_shape)}, {arch.num_classes} classes, "
                f"channels {arch.channels}, {arch.cells_per_stage} cells per stage)",
            )
        return params

    def contains(self, arch: CellArchitecture | Architecture) -> bool:
        try:
            self.to_params(arch)
        except ConfigError:
            return False
        return True

    def size(self) -> int:
        """How many cells the space holds: 5 ** 6 = 15,625."""
        return len(NB201_OPS) ** len(NB201_EDGES)

    def for_data(self, shape: tuple[int, ...], num_classes: int) -> CellSpace:
        """This space on a data set's images: its channels and classes, the same skeleton."""
        if len(shape) != 3:
            raise ConfigError(
                "dataset",
                f"space {self.name!r} needs {RANK_NAMES[3]} input, got shape {list(shape)}",
            )
        try:
            check_cell_input(tuple(shape))
        except ValueError as exc:
            raise ConfigError("dataset", f"space {self.name!r}: {exc}") from None
        data = self.model_dump()
        data["input"] = {"shape": tuple(shape), "num_classes": num_classes}
        try:
            return type(self).model_validate(data)
        except ValidationError as exc:
            from nas.search_space._load import pydantic_error  # _load imports this module

            raise pydantic_error(exc) from None


class _Answers:
    """A trial answering from fixed params (every name is present by construction)."""

    def __init__(self, params: dict[str, str]) -> None:
        self.params = params

    def suggest_int(self, name: str, low: int, high: int) -> int:
        raise KeyError(name)

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        return self.params[name]
