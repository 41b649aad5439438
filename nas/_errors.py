"""The exceptions nas raises.

Every error a user can cause derives from :class:`NasError` and carries a
one-line message that names the field and what is allowed, so the CLI can print
it as is and exit with status 2.
"""

from __future__ import annotations


class NasError(Exception):
    """Root of every error nas raises on purpose."""


class ConfigError(NasError, ValueError):
    """A search config, search space or option is invalid.

    ``field`` is the dotted path of the offending value (``stages.0.depth``),
    or ``""`` when the problem is with the input as a whole.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)


class UnknownNameError(ConfigError, KeyError):
    """A name was looked up in a registry that does not hold it."""

    def __init__(self, kind: str, name: str, known: list[str], field: str = "") -> None:
        self.kind = kind
        self.name = name
        self.known = known
        message = f"unknown {kind} {name!r}; known: {', '.join(known) or '(none)'}"
        super().__init__(field or kind, message)

    def __str__(self) -> str:  # KeyError would quote the message otherwise.
        return Exception.__str__(self)


class StorageError(NasError):
    """A database URL cannot be opened or used."""


class EvaluationError(NasError):
    """A candidate could not be evaluated; the trial ends FAILED with this reason."""


class Pruned(NasError):
    """An evaluation was stopped early because its reporter said so; the trial ends PRUNED.

    ``step`` is the last step reported (an epoch for training) and ``metrics`` what
    the evaluation had measured by then.
    """

    def __init__(self, step: int, metrics: dict[str, float]) -> None:
        self.step = step
        self.metrics = metrics
        super().__init__(f"pruned at step {step}")
