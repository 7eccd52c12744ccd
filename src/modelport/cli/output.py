"""How the CLI talks to people: rich for humans, plain JSON for scripts, errors on stderr."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console

console = Console()
err = Console(stderr=True)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def ago(iso: str | None) -> str:
    from datetime import UTC, datetime

    if not iso:
        return "-"
    seconds = (datetime.now(UTC) - datetime.fromisoformat(iso)).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"
