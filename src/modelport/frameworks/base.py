"""The interface every framework adapter implements, and what it hands to the store."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import numpy as np

REGRESSION = "regression"
CLASSIFICATION = "classification"
TENSOR = "tensor"  # a generic model: named tensors in, named tensors out
IMAGE_CLASSIFICATION = "image-classification"


@dataclass
class Packed:
    """A model turned into safe files plus what the registry records about it."""

    files: dict[str, bytes]
    task: str
    signature: dict[str, Any]
    libraries: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


class Predictor:
    """A loaded model. Tabular models take a 2-D float array; tensor models named arrays."""

    classes: list[Any] | None = None
    # The largest magnitude an input value may have, for models that compute in a narrower type
    # than float64 (tree ensembles use float32): larger values are refused, not overflowed.
    input_limit: float | None = None

    def predict(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} does not give probabilities")

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Generic tensor inference (the v2 protocol); tabular models have one input."""
        (x,) = inputs.values()
        return {"predictions": self.predict(x)}


class Adapter(Protocol):
    name: str
    module: str  # the Python module the framework's models need at load time
    # Distributions a server needs to load this framework's models (pinned at build time).
    requirements: tuple[str, ...]

    def accepts(self, obj: Any) -> bool: ...
    def pack(self, obj: Any, *, feature_names: list[str] | None = None,
             input_example: Any = None) -> Packed: ...
    def accepts_file(self, path: Path, head: bytes) -> bool: ...
    def pack_file(self, path: Path) -> Packed: ...
    def load(self, files: dict[str, bytes], signature: dict[str, Any], extra: dict[str, Any]) -> Predictor: ...


def versions_of(*dists: str) -> dict[str, str]:
    """Installed versions of ``dists``: recorded with each model so images pin the same ones."""
    out = {}
    for d in dists:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[d] = metadata.version(d)
    return out


def tabular_signature(n_features: int, feature_names: list[str] | None, *, task: str,
                      classes: list[Any] | None = None, allow_nan: bool = False) -> dict[str, Any]:
    names = [str(n) for n in feature_names] if feature_names is not None else [f"x{i}" for i in range(n_features)]
    sig: dict[str, Any] = {
        "kind": "tabular",
        "features": names,
        "dtype": "float64",
        "allow_nan": allow_nan,
        "output": {"dtype": "float64" if task == REGRESSION else _label_dtype(classes)},
    }
    if classes is not None:
        sig["classes"] = [_plain(c) for c in classes]
    return sig


TEST_ROWS = 32  # rows of a tabular model's input_example kept with it


def example_rows(input_example: Any, n_features: int) -> dict[str, Any]:
    """A tabular model's ``input_example`` (rows of its inputs, e.g. held-out test rows) → the ``extra`` that keeps
    up to TEST_ROWS of them (missing values as null), which a conversion to ONNX is checked on."""
    if input_example is None:
        return {}
    from modelport.errors import FrameworkError

    try:
        x = np.asarray(input_example, dtype=np.float64)
    except (TypeError, ValueError):
        raise FrameworkError("input_example must be rows of numbers (a 2-D array or a DataFrame)") from None
    if x.ndim != 2 or x.shape[1] != n_features or not len(x):
        raise FrameworkError(f"input_example has shape {x.shape}; the model takes rows of {n_features} features")
    x = x[:TEST_ROWS]
    return {"test_rows": np.where(np.isnan(x), None, x).tolist()}


def _label_dtype(classes: list[Any] | None) -> str:
    if classes and all(isinstance(_plain(c), str) for c in classes):
        return "string"
    return "int64"


def _plain(value: Any) -> Any:
    """numpy scalars → Python scalars, so metadata stores as JSON."""
    return value.item() if isinstance(value, np.generic) else value
