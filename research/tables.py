"""Tables for the terminal (tools/compare.py, tools/status.py, a sweep's summary): tabulate, as wide as the
columns need and no wider, with the terminal's width to fit in."""
from __future__ import annotations

import shutil

import tabulate as tabulate_module
from tabulate import tabulate

FALLBACK_WIDTH = 100      # not a terminal (a pipe, a log, CI): what a table is fitted to


def terminal_width() -> int:
    """Columns of the terminal (or $COLUMNS); FALLBACK_WIDTH when the output is not a terminal."""
    return shutil.get_terminal_size((FALLBACK_WIDTH, 24)).columns


def text_table(header: tuple[str, ...] | list[str], rows: list[list], fmt: str = "simple",
               wrap: dict[int, int] | None = None) -> str:
    """`rows` under `header` in tabulate's `fmt`, cells as given (no number parsing). tabulate pads every header
    by 2 spaces beyond its column's widest cell; here a column is as wide as its widest cell or header, and a cell's
    leading spaces (an indent) are kept. `wrap`:
    column index -> width at which that column's cells wrap onto more lines."""
    padding, tabulate_module.MIN_PADDING = tabulate_module.MIN_PADDING, 0
    try:
        widths = [(wrap or {}).get(i) for i in range(len(header))] if wrap else None
        return tabulate(rows, headers=list(header), tablefmt=fmt, disable_numparse=True, maxcolwidths=widths,
                        maxheadercolwidths=widths, preserve_whitespace=True)     # a cell's indent stays
    finally:
        tabulate_module.MIN_PADDING = padding


def fitted_table(header: tuple[str, ...] | list[str], rows: list[list], width: int, column: int, narrowest: int,
                 fmt: str = "simple") -> str:
    """text_table, the cells of `column` wrapped (to no fewer than `narrowest` characters) until it fits in `width`."""
    table = text_table(header, rows, fmt)
    wrap_at = max((len(row[column]) for row in rows), default=0)
    while width_of(table) > width and wrap_at > narrowest:
        wrap_at = max(narrowest, wrap_at - (width_of(table) - width))
        table = text_table(header, rows, fmt, wrap={column: wrap_at})
    return table


def width_of(text: str) -> int:
    """The widest line of `text`."""
    return max((len(line) for line in text.splitlines()), default=0)


def percent(value: float | None) -> str:
    """An accuracy as every table prints it: '98.61%' ('-' when unknown)."""
    return "-" if value is None else f"{100 * value:.2f}%"


def figure(key: str, value: float | None) -> str:
    """A metric's value for a table: accuracies (.../top1, .../top5, .../accuracy) as percent(), others to 4 places."""
    if value is None:
        return "-"
    return percent(value) if key.rsplit("/", 1)[-1] in ("top1", "top5", "accuracy") else f"{value:.4f}"
