"""The one registry pattern: classes register under a lowercase key with a decorator; look-ups of an unknown
key fail with a message that lists the registered keys. Used by the model zoo and the dataset adapters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T", bound=type)


class Registry(Generic[T]):
    """Name → class. ``kind`` names what is registered in error messages (``"model"``, ``"dataset"``).

    ``check`` (optional) validates a class when it registers (e.g. that its ``Config`` is a dataclass); the
    registered class gets its key as the class attribute ``name``.
    """

    def __init__(self, kind: str, check: Callable[[str, T], None] | None = None) -> None:
        self.kind = kind
        self._check = check
        self._classes: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Class decorator: ``@registry.register("key")``."""

        def deco(cls: T) -> T:
            if name in self._classes:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            if self._check is not None:
                self._check(name, cls)
            cls.name = name
            self._classes[name] = cls
            return cls

        return deco

    def names(self) -> list[str]:
        """Registered keys, sorted."""
        return sorted(self._classes)

    def get(self, name: str) -> T:
        """The class registered as ``name``; ``KeyError`` listing the registered keys otherwise."""
        try:
            return self._classes[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; registered: {self.names()}") from None
