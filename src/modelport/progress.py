"""Progress of long operations: modelport's own steps, and the output of the tools they run.

Operations report each step as a plain ``str``; a line a tool printed (pip, ``docker build``)
is passed as ``ToolOutput``, so whoever shows progress can keep those lines in a log file
instead of flooding a terminal with hundreds of them.
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str], None]


class ToolOutput(str):
    """A line printed by a tool modelport runs: detail for the log, not a step."""

    __slots__ = ()
