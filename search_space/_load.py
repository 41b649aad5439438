"""Loading spaces: a built-in name, a YAML/JSON file, or a dict.

pydantic's validation errors are turned into one :class:`ConfigError` naming the
first offending field, so a user sees one line, not a report.

Two kinds of space exist: layer spaces (:class:`SearchSpace`, the default) and
NAS-Bench-201's cell space (:class:`CellSpace`, a mapping with ``kind: nb201``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any, TypeAlias

import yaml
from pydantic import ValidationError

from nas._errors import ConfigError, UnknownNameError
from nas._registry import Registry
from nas.search_space._architecture import Architecture
from nas.search_space._nb201 import CellArchitecture, CellSpace
from nas.search_space._space import SearchSpace

#: Any space :func:`get_space` returns, and any architecture such a space samples.
AnySpace: TypeAlias = SearchSpace | CellSpace
AnyArchitecture: TypeAlias = Architecture | CellArchitecture

#: Space kinds other than layer spaces, by the value of a mapping's ``kind`` key.
_KINDS: dict[str, type[CellSpace]] = {"nb201": CellSpace}


def _builtin_yaml(file_name: str) -> AnySpace:
    ref = resources.files("nas.search_space") / "builtin" / file_name
    return space_from_dict(yaml.safe_load(ref.read_text()))


#: Built-in spaces by name: each entry makes the space (layer spaces read a YAML file
#: shipped in ``search_space/builtin/``).
SPACES: Registry[Callable[[], AnySpace]] = Registry("search space")
for _name in ("cnn-small", "cnn-mobile", "cnn1d-small", "mlp-small"):
    SPACES.register(_name, partial(_builtin_yaml, f"{_name}.yaml"))
SPACES.register("nb201", CellSpace)


def pydantic_error(exc: ValidationError, prefix: str = "") -> ConfigError:
    """The first error of ``exc`` as a one-line :class:`ConfigError` with its field path."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in (*((prefix,) if prefix else ()), *err["loc"]))
    original = err.get("ctx", {}).get("error")
    if isinstance(original, ConfigError):
        # A cross-field check raised it inside a validator; pydantic wrapped it, so
        # recover its own field (under ``loc``) instead of reporting the whole model.
        field = ".".join(p for p in (loc, original.field) if p)
        if isinstance(original, UnknownNameError):
            return UnknownNameError(original.kind, original.name, original.known, field)
        return ConfigError(field, original.message)
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        message = "unknown field"
    elif err["type"] == "missing":
        message = "is required"
    return ConfigError(loc, message)


def read_mapping(path: Path, field: str) -> dict[str, Any]:
    """A YAML or JSON file's top-level mapping; a missing or malformed file is a ConfigError."""
    if not path.is_file():
        raise ConfigError(field, f"file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(field, f"invalid YAML in {path}{where}") from None
    if not isinstance(data, dict):
        raise ConfigError(field, f"{path} must hold a mapping, got {type(data).__name__}")
    return data


def space_from_dict(data: dict[str, Any], prefix: str = "") -> AnySpace:
    """Validate a dict as a :class:`SearchSpace`, or, with ``kind: nb201``, a :class:`CellSpace`."""
    model: type[SearchSpace] | type[CellSpace] = SearchSpace
    if "kind" in data:
        kind = str(data["kind"])
        if kind not in _KINDS:
            field = f"{prefix}.kind" if prefix else "kind"
            raise UnknownNameError("space kind", kind, list(_KINDS), field)
        model = _KINDS[kind]
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise pydantic_error(exc, prefix) from None
    except ConfigError as exc:
        if prefix:
            raise ConfigError(f"{prefix}.{exc.field}", exc.message) from None
        raise


def get_space(name_or_path: str | Path, field: str = "space") -> AnySpace:
    """A built-in space by name, or a space read from a YAML/JSON file.

    Example:
        >>> from nas.search_space import get_space
        >>> get_space("mlp-small").input.shape
        (64,)
        >>> get_space("nb201").size()
        15625
    """
    text = str(name_or_path)
    if text in SPACES:
        return SPACES.get(text)()
    path = Path(text)
    if path.suffix.lower() in (".yaml", ".yml", ".json") or path.exists():
        return space_from_dict(read_mapping(path, field))
    known = ", ".join(SPACES.names())
    raise ConfigError(
        field, f"unknown search space {text!r}; built-in: {known}, or a .yaml/.json file"
    )


def space_infos() -> list[dict[str, Any]]:
    """Name, description, input, stages and size of every built-in space (for ``nas spaces``).

    ``stages`` counts a layer space's searched stages, and the 3 stages of cells of
    the NAS-Bench-201 skeleton.
    """
    infos = []
    for name in SPACES:
        space = get_space(name)
        infos.append(
            {
                "name": name,
                "description": space.description,
                "input_shape": list(space.input.shape),
                "num_classes": space.input.num_classes,
                "stages": len(space.stages) if isinstance(space, SearchSpace) else 3,
                "size": space.size(),
            }
        )
    return infos


def architecture_from_json(text: str | bytes) -> AnyArchitecture:
    """A layer architecture or a NAS-Bench-201 cell from its JSON (``arch.to_json()``).

    Raises:
        ConfigError: ``text`` is neither (field ``arch``, with pydantic's first complaint).

    Example:
        >>> from nas.search_space import architecture_from_json, get_space, sample_random
        >>> arch = sample_random(get_space("nb201"), 1, seed=0)[0]
        >>> architecture_from_json(arch.to_json()) == arch
        True
    """
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError("arch", f"not JSON: {exc}") from None
    kind: type[Architecture] | type[CellArchitecture] = (
        CellArchitecture if isinstance(data, dict) and "ops" in data else Architecture
    )
    try:
        return kind.model_validate(data)
    except ValidationError as exc:
        raise pydantic_error(exc, prefix="arch") from None


def dump_space(space: AnySpace) -> str:
    """The space as JSON (reads back with :func:`space_from_dict`)."""
    return json.dumps(space.model_dump(mode="json"), indent=2)


__all__ = [
    "SPACES",
    "AnyArchitecture",
    "AnySpace",
    "architecture_from_json",
    "dump_space",
    "get_space",
    "space_from_dict",
    "space_infos",
]
