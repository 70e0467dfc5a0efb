"""Lookups in the name -> module tables that configs refer to (methods, dataset kinds)."""

from __future__ import annotations

from collections.abc import Mapping


def module_for(table: Mapping[str, str], name: str, what: str) -> str:
    """``table[name]``; a ValueError naming ``what`` and the allowed names when it has none."""
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"{what} {name!r}: allowed {', '.join(table)}") from None
