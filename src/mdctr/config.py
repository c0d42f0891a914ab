"""Strict loading of frozen dataclass configs: a misspelt key fails at load time and names itself."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    pass


def from_dict(cls: type[T], data: Mapping[str, Any] | None, *, where: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys raise :class:`ConfigError` naming them.

    Lists become tuples where the field default is a tuple (frozen configs hold tuples).
    """
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {unknown} for {cls.__name__}; valid keys: {sorted(fields)}"
        )
    for key, value in list(data.items()):
        if isinstance(value, list):
            data[key] = tuple(value)
    return cls(**data)


def numbers_from_env(
    cls: type, env: Mapping[str, str], name_of: Any, *, skip: tuple[str, ...] = ()
) -> dict[str, int | float]:
    """The int/float fields of dataclass ``cls`` that ``env`` sets, under the variable ``name_of(field name)``,
    parsed by the field's type (fields in ``skip`` and unset variables left out); a value that does not parse
    raises :class:`ConfigError` naming the variable."""
    values: dict[str, int | float] = {}
    for f in dataclasses.fields(cls):
        raw = env.get(name_of(f.name))
        if f.name in skip or raw is None:
            continue
        kind = int if f.type in ("int", int) else float
        try:
            values[f.name] = kind(raw)
        except ValueError:
            raise ConfigError(f"{name_of(f.name)}={raw!r} is not a valid {kind.__name__}") from None
    return values
