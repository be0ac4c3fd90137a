"""The one idiom for every name lookup (models, optimizers, schedules, losses, initializers,
convolution implementations, dtypes, ...): a table of names, and a one-line UserError that lists
the known names when a name is not in it."""

from __future__ import annotations

from typing import Mapping, Sequence, TypeVar

from visionax.errors import UserError

T = TypeVar("T")

__all__ = ["lookup", "lookup_many"]


def lookup(table: Mapping[str, T], name: str, what: str) -> T:
    """`table[name]`; UserError "unknown <what> '<name>'; choose one of <names>" otherwise."""
    try:
        return table[name]
    except (KeyError, TypeError):
        raise UserError(f"unknown {what} {name!r}; choose one of {', '.join(table)}") from None


def lookup_many(table: Mapping[str, T], names: str | Sequence[str], what: str, key: str) -> dict[str, T]:
    """`{name: table[name]}` for a comma-separated string (as `--config.<key>=a,b` gives) or a
    sequence of names, in order; UserError for an empty list or an unknown name."""
    if isinstance(names, str):
        names = names.split(",")
    names = [name.strip() for name in names if name.strip()]
    if not names:
        raise UserError(f"config.{key} is empty; pass --config.{key}={','.join(table)} (or a subset)")
    for name in names:
        if name not in table:
            raise UserError(f"unknown {what} {name!r} in config.{key}; use a comma-separated subset of "
                            f"{','.join(table)}")
    return {name: table[name] for name in names}
