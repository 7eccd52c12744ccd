"""The ``modelport`` command (``main``): Typer over the Python API, in modelport.cli.main."""

from __future__ import annotations

import sys


def main() -> None:
    """The ``modelport`` script: the command line, or one sentence on what to install where its libraries
    are not (a model image holds modelport's serving runtime only: ``python -m modelport.serving``)."""
    try:
        from modelport.cli.main import main as cli_main
    except ImportError as e:
        from modelport.extras import missing

        absent = missing("cli") or [e.name or str(e)]
        sys.exit(f"Error: the modelport command needs {', '.join(absent)}, not installed in this Python ({sys.executable}): "
                 "pip install 'modelport[cli]' (a model image serves with: python -m modelport.serving serve REF)")
    cli_main()
