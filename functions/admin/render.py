"""Output: rich tables for people (default), JSON for scripts (`--json`)."""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

from rich import box
from rich.console import Console
from rich.table import Table


def console(out: TextIO | None = None) -> Console:
    # a terminal's own width; 120 columns in a pipe or file (COLUMNS overrides both)
    width = shutil.get_terminal_size((120, 24)).columns
    return Console(file=out or sys.stdout, width=width, soft_wrap=False, highlight=False)


def print_json(data: Any, out: TextIO | None = None) -> None:
    (out or sys.stdout).write(json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")


def table(
    title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], keep: int = 1
) -> Table:
    """The first `keep` columns stay on one line (ids, paths, codes); the others wrap."""
    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_lines=False)
    for i, column in enumerate(columns):
        t.add_column(column, overflow="fold", no_wrap=i < keep, min_width=min(len(column), 12))
    for row in rows:
        t.add_row(*("" if v is None else str(v) for v in row))
    return t


def short_time(value: Any) -> Any:
    """An ISO 8601 time as `2026-12-01 10:40:09Z` for tables (JSON keeps the full form)."""
    if isinstance(value, str) and len(value) >= 19 and value[10] == "T":
        return value[:10] + " " + value[11:19] + "Z"
    return value


def problem_lines(problems: Iterable[Any], width: int | None = None) -> str:
    """Problems as `SEVERITY  path  code` and the message indented under it: easier to read
    than a table whose message column is squeezed by long document paths."""
    width = width or shutil.get_terminal_size((120, 24)).columns
    lines: list[str] = []
    for p in problems:
        lines.append(f"{p.severity.upper():<8} {p.path}  {p.code}")
        lines += textwrap.wrap(p.message, width, initial_indent=" " * 9, subsequent_indent=" " * 9)
    return "\n".join(lines) + ("\n" if lines else "")
