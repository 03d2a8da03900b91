"""Typed configuration: frozen dataclasses read from and written to plain dicts (YAML / JSON).

Every configuration in slotlab (the model families, the data options, the training run) is a
dataclass. `to_dict` writes one out as plain values; `from_dict` reads one back and validates it:
an unknown or mistyped key is one `ConfigError` line naming the key and the valid ones. Lists in
YAML become tuples; a nested dataclass field is read from a nested mapping.

A field's `metadata={"help": ...}` is its one-line description; the command line's flags are
generated from those fields (`slotlab.train.commands`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

from slotlab.errors import ConfigError

T = TypeVar("T")


def to_dict(config: Any) -> dict[str, Any]:
    """A dataclass -> plain dict (tuples as lists, nested dataclasses as dicts)."""
    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        return value

    return plain(config)


def from_dict(cls: type[T], values: Any, where: str = "config") -> T:
    """Read dataclass `cls` from a mapping; missing keys take the defaults."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a mapping of {cls.__name__} keys, "
                          f"got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    unknown = sorted(str(k) for k in values if k not in fields)
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in {where}; valid keys: "
                          f"{', '.join(fields)}")
    kwargs = {name: convert(value, hints[name], f"{where}.{name}")
              for name, value in values.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def convert(value: Any, hint: Any, where: str) -> Any:
    """`value` checked against (and converted to) the type `hint`."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return convert(value, option, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0])
    if dataclasses.is_dataclass(hint):
        return value if isinstance(value, hint) else from_dict(hint, value, where)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where} must be one of {', '.join(map(repr, args))}, "
                              f"got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(convert(v, args[0], where) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{where} must have {len(args)} values, got {list(value)}")
        return tuple(convert(v, a, where) for v, a in zip(value, args, strict=True))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-8 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{where} must be a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    if hint is Any:
        return value
    raise TypeError(f"{where}: unsupported config type {hint!r}")


def field_help(cls: type, name: str) -> str | None:
    """The help text of a field (its metadata), for flags and documentation."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.metadata.get("help")
    raise KeyError(name)


def option(default: Any, help: str, **kwargs: Any) -> Any:  # noqa: A002
    """A dataclass field with a default and its one-line help."""
    return dataclasses.field(default=default, metadata={"help": help, **kwargs})
