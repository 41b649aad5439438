"""A small name -> object registry filled by a decorator (the timm habit).

Built-in spaces, layer types, evaluators and data sets are each kept in one
:class:`Registry`; ``nas spaces`` / ``nas evaluators`` / ``nas datasets`` list
them.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from nas._errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Objects registered by name, in registration order.

    Example:
        >>> from nas._registry import Registry
        >>> colors: Registry[str] = Registry("color")
        >>> _ = colors.register("red", "#f00")
        >>> colors.get("red")
        '#f00'
        >>> colors.names("r*")
        ['red']
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T) -> T:
        """Add ``obj`` under ``name``; a duplicate name is an error, never a silent override."""
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = obj
        return obj

    def unregister(self, name: str) -> T:
        """Remove and return the object registered as ``name`` (plug-ins and tests)."""
        return self._items.pop(name)

    def decorator(self, name: str) -> Callable[[T], T]:
        """``@registry.decorator("name")`` registers the decorated object."""

        def wrap(obj: T) -> T:
            return self.register(name, obj)

        return wrap

    def get(self, name: str, field: str = "") -> T:
        """The object registered as ``name``.

        Raises:
            UnknownNameError: no such name; the message lists the known ones.
        """
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self.names(), field) from None

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching a shell-style ``pattern``."""
        return [n for n in self._items if fnmatch.fnmatchcase(n, pattern)]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def items(self) -> list[tuple[str, T]]:
        return list(self._items.items())
