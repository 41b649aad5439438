"""Validate keyword settings against a pydantic model, failing with :class:`ConfigError`.

Data sets and evaluators both take plain ``**settings``; this turns pydantic's
error into one line that names the offending field, the value received and,
for an unknown key, the settings that exist.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from nas._errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class NoSettings(BaseModel):
    """The settings of something that takes none: any key is rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def validate_settings(model: type[M], settings: dict[str, Any], owner: str) -> M:
    """``model(**settings)``, or :class:`ConfigError` naming the first bad field of ``owner``."""
    try:
        return model.model_validate(settings)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"])
        allowed = ", ".join(model.model_fields) or "(none)"
        if error["type"] == "extra_forbidden":
            message = f"{owner} has no setting {field!r}; allowed: {allowed}"
        else:
            message = f"{error['msg']} for {owner}, but got {error.get('input')!r}"
        raise ConfigError(field, message) from None


def sha256_json(obj: Any) -> str:
    """SHA-256 hex digest of the canonical JSON (sorted keys, no whitespace) of ``obj``."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
