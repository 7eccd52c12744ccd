"""One answered prediction, as the prediction log stores it (written by the gateway and by serve --log-db)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass
class PredictionRecord:
    time: datetime
    request_id: str
    key_id: str | None
    model: str
    version: str | None
    inputs: bytes
    outputs: bytes
    content_type: str
    latency_ms: float
    status: int
