"""Markdown tables of the job outputs (table.md files and the report's tables.md)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def table_row(cells: Iterable[object]) -> str:
    """One row ``| a | b |``; a ``|`` inside a cell (``median |err|``) is escaped, so it
    stays one cell."""
    return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"


def table_lines(header: Sequence[object], rows: Iterable[Iterable[object]]) -> list[str]:
    """The header row, the separator and one row per item of ``rows``."""
    return [table_row(header), "|" + "---|" * len(header), *map(table_row, rows)]
