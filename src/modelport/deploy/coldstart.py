"""A service's cold start, as ``modelport run`` prints it: when the engine created and started the replica,
what its server says of its own start (the ``Startup:`` line, serving/timings.py), when the gateway checked
it up, and when the first prediction through the gateway was answered. Every stage is on the same clock
(containers share the host's kernel), as seconds since the command started."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from modelport.serving.timings import parse_line

# Printed names, in order; a stage the server did not report (``worker``: one process) is left out.
NAMES = {"created": "created", "started": "started", "process": "process", "worker": "worker",
         "imports": "imports", "loaded": "loaded", "warmup": "warm-up", "ready": "ready",
         "proxy": "in the gateway", "answered": "first prediction"}


@dataclass
class ColdStart:
    origin: float  # when the command started, seconds since the epoch
    stages: dict[str, float]  # stage → seconds since the epoch, in NAMES' order

    def seconds(self) -> dict[str, float]:
        return {k: v - self.origin for k, v in self.stages.items()}

    def line(self) -> str:
        parts = ", ".join(f"{NAMES[k]} {v:.2f}s" for k, v in self.seconds().items())
        last = NAMES[next(reversed(self.stages))] if self.stages else "nothing"
        total = max(self.seconds().values(), default=0.0)
        return f"Cold start: {last} at {total:.2f}s ({parts})"


def engine_time(text: str) -> float:
    """A Docker timestamp (RFC 3339, nanoseconds, UTC) → seconds since the epoch."""
    head, _, frac = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(head + "+00:00").timestamp() + float(f"0.{frac or 0}")


def reported_ready(log: bytes) -> bool:
    """Whether a replica's log holds its server's ``Startup:`` line, logged once it is ready."""
    return any("ready" in (parse_line(line) or {}) for line in log.decode(errors="replace").splitlines()
               if "Startup:" in line)


def server_stages(container: Any, timeout: float = 2.0) -> dict[str, float] | None:
    """The replica's own ``Startup:`` stages (with several workers, the last one ready), waiting briefly
    for the line to reach the engine's log."""
    deadline = time.monotonic() + timeout
    while True:
        found = [s for line in container.logs().decode(errors="replace").splitlines() if (s := parse_line(line))]
        if found or time.monotonic() > deadline:
            return max(found, key=lambda s: s.get("ready", 0.0)) if found else None
        time.sleep(0.05)


def measure(origin: float, replica: Any, proxied: float, answered: float | None) -> ColdStart:
    replica.reload()
    stages = {"created": engine_time(replica.attrs["Created"]), "started": engine_time(replica.attrs["State"]["StartedAt"])}
    stages.update(server_stages(replica) or {})
    stages["proxy"] = proxied
    if answered is not None:
        stages["answered"] = answered
    return ColdStart(origin, {k: stages[k] for k in NAMES if k in stages})


def first_prediction(url: str, model: str, timeout: float = 10.0) -> float | None:
    """Ask the service for one prediction on inputs made from the model's v2 metadata (zeros, batch 1);
    → when it was answered, or None for a model whose inputs cannot be made up (encoded images)."""
    import httpx

    try:
        with httpx.Client(base_url=url, timeout=timeout, trust_env=False) as client:
            meta = client.get(f"/v2/models/{model}").json()
            inputs = []
            for spec in meta.get("inputs", []):
                if spec["datatype"] == "BYTES":
                    return None
                shape = [1 if d == -1 else d for d in spec["shape"]]
                inputs.append({"name": spec["name"], "shape": shape, "datatype": spec["datatype"],
                               "data": [False if spec["datatype"] == "BOOL" else 0] * math.prod(shape)})
            answer = client.post(f"/v2/models/{model}/infer", json={"inputs": inputs})
    except (httpx.HTTPError, ValueError, KeyError, TypeError):  # a breakdown without it, not a failed run
        return None
    return time.time() if answer.status_code == 200 else None
