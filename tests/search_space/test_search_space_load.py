"""Loading spaces: built-in names, YAML and JSON files, dicts, and the JSON dump."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from nas import ConfigError, UnknownNameError
from nas.search_space import (
    SPACES,
    SearchSpace,
    dump_space,
    get_space,
    space_from_dict,
    space_infos,
)

_SPACE: dict[str, Any] = {
    "name": "tiny",
    "input": {"shape": [1, 8, 8], "num_classes": 10},
    "stages": [{"depth": [1, 2], "widths": [8], "layers": ["conv3x3"], "wbits": [4, 8]}],
}


@pytest.mark.parametrize("name", SPACES.names())
def test_builtin_space_is_named_after_its_entry(name: str) -> None:
    assert get_space(name).name == name


@pytest.mark.parametrize("name", SPACES.names())
def test_dump_space_round_trip(name: str) -> None:
    space = get_space(name)
    assert space_from_dict(json.loads(dump_space(space))) == space


def test_unknown_name_lists_the_builtins() -> None:
    with pytest.raises(ConfigError) as info:
        get_space("nosuch")
    assert info.value.field == "space"
    assert "'nosuch'" in info.value.message
    assert ", ".join(SPACES.names()) in info.value.message


def test_field_names_the_caller() -> None:
    with pytest.raises(ConfigError) as info:
        get_space("nosuch", field="config.space")
    assert info.value.field == "config.space"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError, match="file not found") as info:
        get_space(path)
    assert info.value.field == "space"
    assert str(path) in info.value.message


def test_invalid_yaml_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: tiny\ninput: {shape: [1, 8, 8]\nstages: []\n")
    with pytest.raises(ConfigError, match="invalid YAML") as info:
        get_space(path)
    assert info.value.field == "space"
    assert "at line" in info.value.message
    assert "\n" not in str(info.value)


def test_yaml_list_is_not_a_space(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- conv3x3\n- identity\n")
    with pytest.raises(ConfigError, match="must hold a mapping, got list") as info:
        get_space(path)
    assert info.value.field == "space"


def test_space_from_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(_SPACE))
    space = get_space(path)
    assert space == space_from_dict(_SPACE)
    assert (space.name, space.stages[0].wbits) == ("tiny", (4, 8))


def test_space_from_json_file(tmp_path: Path) -> None:
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(_SPACE))
    assert get_space(str(path)) == space_from_dict(_SPACE)


def test_bad_space_in_a_file_names_the_field(tmp_path: Path) -> None:
    bad = {**_SPACE, "stages": [{**_SPACE["stages"][0], "layers": ["conv9x9"]}]}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(UnknownNameError) as info:
        get_space(path)
    assert info.value.field == "stages.0.layers.0"


def test_space_infos_describe_every_builtin() -> None:
    infos = {info["name"]: info for info in space_infos()}
    assert list(infos) == SPACES.names()
    for name, info in infos.items():
        space = get_space(name)
        assert info["size"] == space.size()
        assert info["stages"] == (len(space.stages) if isinstance(space, SearchSpace) else 3)
        assert info["input_shape"] == list(space.input.shape)
