"""Tables and JSON for the read commands (rich for people, ``--format json`` for scripts)."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from enum import Enum
from typing import Any

from rich.console import Console
from rich.table import Table


class Format(str, Enum):
    table = "table"
    json = "json"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value.is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:.3e}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, list | tuple):
        return ", ".join(_cell(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_cell(v)}" for k, v in value.items()) or "-"
    return "-" if value is None else str(value)


def table(rows: Sequence[dict[str, Any]], title: str | None = None) -> Table:
    """A rich table with one column per key of the first row."""
    t = Table(title=title, show_lines=False)
    columns = list(rows[0]) if rows else []
    for col in columns:
        numeric = all(isinstance(r.get(col), int | float) for r in rows)
        t.add_column(col, overflow="fold", justify="right" if numeric else "left")
    for row in rows:
        t.add_row(*(_cell(row.get(col)) for col in columns))
    return t


def emit(rows: Sequence[dict[str, Any]] | dict[str, Any], fmt: Format, title: str = "") -> None:
    """Print ``rows`` as a table or as JSON on standard output."""
    # Piped output is not cut to 80 columns: architecture summaries are long.
    console = Console(width=None if sys.stdout.isatty() else 200)
    if fmt == Format.json:
        print(json.dumps(rows, indent=2, default=str))
    elif isinstance(rows, dict):
        console.print(table([{"field": k, "value": v} for k, v in rows.items()], title))
    elif rows:
        console.print(table(rows, title))
    else:
        console.print(f"{title}: (none)" if title else "(none)")
