"""How the CLI talks to people: rich for humans, plain JSON for scripts, errors on stderr.

Both consoles print text verbatim (no Rich markup, highlighting or emoji codes): messages carry
things like ``pip install 'modelport[docker]'``, paths and model names, and a ``[docker]`` must
not be taken for a style tag. Colour is added explicitly with ``success`` and ``error``. Lines are never hard-wrapped either:
a path or a command split by an inserted newline cannot be copied."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

from rich.console import Console
from rich.text import Text

from modelport.errors import ModelportError
from modelport.progress import ToolOutput

console = Console(markup=False, highlight=False, emoji=False, soft_wrap=True)
err = Console(stderr=True, markup=False, highlight=False, emoji=False, soft_wrap=True)


def success(headline: str, rest: str = "") -> None:
    """``headline`` in green, then ``rest`` as it is."""
    console.print(Text.assemble((headline, "green"), rest))


def progress(line: str) -> None:
    """One step of a long command, indented."""
    console.print(f"  {line}")


class LoggedProgress:
    """Progress of a long command: every line goes to a log file; the terminal shows modelport's own
    steps (and `docker build`'s "Step k/N" lines), not the hundreds of lines pip and Docker print.
    Use as a context manager: a failure names the log file, a success removes it."""

    def __init__(self, command: str) -> None:
        from modelport.config import home

        self.path = home() / "logs" / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        self._file: TextIO | None = None

    def __call__(self, line: str) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in __exit__)
        self._file.write(line + "\n")
        if not isinstance(line, ToolOutput):
            progress(line)

    def __enter__(self) -> LoggedProgress:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if self._file is not None:
            self._file.close()
        if isinstance(exc, ModelportError) and self._file is not None:
            exc.args = (f"{exc}\nFull log: {self.path}",)
        elif exc is None:
            self.path.unlink(missing_ok=True)


def error(message: str) -> None:
    err.print(Text.assemble(("Error:", "red"), " ", message))


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Print rows under headers the way ``docker ps`` and ``kubectl get`` do: no cell is ever cut short.

    Piped (or too wide for the terminal): plain columns separated by spaces, one line a row, for
    ``grep``/``awk`` (``--json`` for anything more). In a terminal, when the whole table fits: a Rich table."""
    from rich import box
    from rich.measure import Measurement
    from rich.table import Table

    cells = [["-" if c is None or c == "" else str(c) for c in row] for row in rows]  # no empty column
    if console.is_terminal:
        pretty = Table(*headers, box=box.SIMPLE_HEAD, header_style="bold")
        for column in pretty.columns:
            column.no_wrap = True
        for row in cells:
            pretty.add_row(*row)
        if Measurement.get(console, console.options.update_width(10**6), pretty).maximum <= console.width:
            console.print(pretty)
            return
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]
    for row in [list(headers), *cells]:
        print("   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def ago(iso: str | None) -> str:
    from datetime import UTC, datetime

    if not iso:
        return "-"
    seconds = (datetime.now(UTC) - datetime.fromisoformat(iso)).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"
