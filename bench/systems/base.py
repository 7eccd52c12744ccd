"""What a serving system is to the harness: how to launch it and which rows it measures."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.envs import VenvSpec, python_of

APPS = Path(__file__).resolve().parent.parent / "apps"


@dataclass(frozen=True)
class Workload:
    """What every system of one table serves: a saved model, one request input and its answer."""

    title: str
    model_path: Path
    sample: list[float]
    expected: float
    tolerance: float = 1e-6


@dataclass(frozen=True)
class Row:
    """One line of the table: a request shape sent to a running system."""

    name: str
    path: str
    body: Callable[[Workload], Any]
    # Pulls the prediction out of the JSON answer; None for a constant answer
    # (the HTTP limit), which is checked for HTTP 200 and valid JSON only.
    read: Callable[[Any], float] | None
    # Which of the system's addresses the row loads: "published" (127.0.0.1:port) or one the system names
    # (System.base_url), e.g. a container's address on its Docker network.
    via: str = "published"


@dataclass(frozen=True)
class Launch:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = APPS


@dataclass(frozen=True)
class Context:
    python: Path  # the system's venv interpreter, or the harness's own
    work: Path  # scratch dir for this system (config files, homes)
    workload: Workload


class System:
    """Subclasses set the attributes and implement ``launch``; ``prepare`` is optional."""

    name: str
    about: str  # one line for the legend under the tables
    venv: VenvSpec | None = None  # None: runs in the harness's (the project's) environment
    harness_dists: tuple[str, ...] = ()  # without a venv: the versions worth recording in RESULTS.md
    rows: tuple[Row, ...]
    startup_timeout: float = 120.0

    def preflight(self) -> None:
        """Raise BenchError early if this system cannot run at all."""

    def prepare(self, ctx: Context) -> None:
        """Write whatever the server needs before it starts (config, model store)."""

    def launch(self, ctx: Context, port: int) -> Launch:
        raise NotImplementedError

    def base_url(self, ctx: Context, port: int, via: str) -> str:
        """Where a row with this ``via`` sends its requests, once the system answers on its port."""
        if via != "published":
            raise NotImplementedError(f"{self.name} has no {via!r} address")
        return f"http://127.0.0.1:{port}"

    def python(self) -> Path:
        return python_of(self.venv.name) if self.venv else Path(sys.executable)


# Request shapes shared by several systems.
def features_body(w: Workload) -> dict[str, Any]:
    return {"features": w.sample}


def read_prediction(answer: Any) -> float:
    return float(answer["prediction"])


def v2_body(input_name: str) -> Callable[[Workload], Any]:
    """Open Inference Protocol v2 request for one row of features."""

    def body(w: Workload) -> dict[str, Any]:
        return {"inputs": [{"name": input_name, "shape": [1, len(w.sample)], "datatype": "FP64", "data": w.sample}]}

    return body


def read_v2(answer: Any) -> float:
    return float(answer["outputs"][0]["data"][0])


def predict_row(name: str, via: str = "published") -> Row:
    """The tutorial's contract: POST /predict {"features": [...]} -> {"prediction": y}."""
    return Row(name, "/predict", features_body, read_prediction, via)
