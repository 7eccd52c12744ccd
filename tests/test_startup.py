"""What a fresh process imports to start: every `modelport` command, server worker and test subprocess pays it."""

from __future__ import annotations

import json
import subprocess
import sys

_PROBE = """
import json, sys
import modelport.cli.main
cli = sorted(m for m in ("sqlalchemy", "aiohttp", "numpy", "sklearn") if m in sys.modules)
modelport.ModelStore, modelport.save_model  # the public API, imported on first use
from modelport.frameworks.sklearn import skops_io
skops_io()
print(json.dumps({"cli": cli, "torch": "torch" in sys.modules}))
"""


def test_the_command_line_starts_without_the_store_and_skops_without_torch() -> None:
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout) == {"cli": [], "torch": False}
