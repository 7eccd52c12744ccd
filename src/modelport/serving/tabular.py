"""What a tabular model accepts: the simple JSON API's rows (features in, prediction out), or rows from tensors."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

from modelport.errors import InvalidInputError

_NUMBER = (int, float)


class TabularSchema:
    """What a tabular model accepts, prepared once so each request only checks values."""

    def __init__(self, signature: dict[str, Any]) -> None:
        self.features: list[str] = signature["features"]
        self.n = len(self.features)
        self.index = {name: i for i, name in enumerate(self.features)}
        self.allow_nan: bool = signature.get("allow_nan", False)
        self.classes: list[Any] | None = signature.get("classes")

    def row(self, values: Any, where: str) -> list[float]:
        if isinstance(values, dict):
            return self._row_from_mapping(values, where)
        if not isinstance(values, list):
            raise InvalidInputError(f"{where} must be a list of {self.n} numbers or an object keyed by feature name")
        if len(values) != self.n:
            raise InvalidInputError(f"{where} has {len(values)} values; the model expects {self.n} "
                                    f"({', '.join(self.features[:10])}{', …' if self.n > 10 else ''})")
        for i, v in enumerate(values):
            if type(v) not in _NUMBER:
                values = self._fix_value(values, i, v, where)
        return values

    def _fix_value(self, values: list[Any], i: int, v: Any, where: str) -> list[Any]:
        if v is None and self.allow_nan:
            values = list(values)
            values[i] = float("nan")
            return values
        name = self.features[i]
        if v is None:
            raise InvalidInputError(f"{where}: feature {name!r} is null; this model does not accept missing values")
        raise InvalidInputError(f"{where}: feature {name!r} must be a number, got {_describe(v)}")

    def _row_from_mapping(self, values: dict[str, Any], where: str) -> list[float]:
        unknown = [k for k in values if k not in self.index]
        missing = [f for f in self.features if f not in values]
        if unknown or missing:
            parts = []
            if missing:
                parts.append(f"missing {', '.join(map(repr, missing[:10]))}")
            if unknown:
                parts.append(f"unknown {', '.join(map(repr, unknown[:10]))}")
            raise InvalidInputError(f"{where}: {'; '.join(parts)} (the model expects {', '.join(self.features)})")
        return self.row([values[f] for f in self.features], where)

    def parse(self, payload: Any) -> tuple[np.ndarray, bool]:
        """→ (rows as a float64 array, whether the request was a single row)."""
        if not isinstance(payload, dict):
            raise InvalidInputError('Request body must be a JSON object like {"features": [...]} or {"instances": [[...], ...]}')
        if "features" in payload:
            if "instances" in payload:
                raise InvalidInputError('Send either "features" (one row) or "instances" (several rows), not both')
            return np.array([self.row(payload["features"], "features")], dtype=np.float64), True
        if "instances" in payload:
            instances = payload["instances"]
            if not isinstance(instances, list) or not instances:
                raise InvalidInputError('"instances" must be a non-empty list of rows')
            rows = [self.row(r, f"instances[{i}]") for i, r in enumerate(instances)]
            return np.array(rows, dtype=np.float64), False
        raise InvalidInputError('Expected "features" (one row) or "instances" (several rows) in the request body')

    def rows_from_tensors(self, tensors: Mapping[str, np.ndarray], unchecked: Collection[str] = ()) -> np.ndarray:
        """Rows from input tensors: one [N, n_features] tensor (any name; [n_features] is one row), or one [N]
        or [N, 1] tensor per feature, by name. ``unchecked``: the tensors that may hold NaN or infinity."""
        if len(tensors) == 1:
            (name, arr), = tensors.items()
            if arr.dtype == object:
                raise InvalidInputError(f"Input {name!r} must be numeric")
            if arr.ndim == 1 and arr.shape[0] == self.n:
                arr = arr.reshape(1, -1)
            if arr.ndim != 2 or arr.shape[1] != self.n:
                raise InvalidInputError(f"Input {name!r} has shape {list(arr.shape)}; the model expects [N, {self.n}] "
                                        f"({', '.join(self.features[:10])})")
            x = arr.astype(np.float64, copy=False)
        else:
            missing = [f for f in self.features if f not in tensors]
            if missing:
                raise InvalidInputError(f"Missing input(s) {', '.join(map(repr, missing[:10]))}: send one [N, {self.n}] "
                                        "tensor, or one tensor per feature named after it")
            cols = [tensors[f].reshape(-1).astype(np.float64, copy=False) for f in self.features]
            if len({len(c) for c in cols}) != 1:
                raise InvalidInputError("Feature tensors have different lengths")
            x = np.column_stack(cols)
        if x.shape[0] == 0:
            raise InvalidInputError("The input has no rows")
        if unchecked:
            self.check_finite(x)
        return x

    def check_finite(self, x: np.ndarray) -> None:
        if not self.allow_nan and not np.isfinite(x).all():
            raise InvalidInputError("Input contains NaN or infinite values, which this model does not accept")

    def probabilities(self, proba: np.ndarray) -> list[dict[str, float]]:
        labels = [str(c) for c in self.classes or range(proba.shape[1])]
        return [dict(zip(labels, row, strict=True)) for row in proba.tolist()]


def _describe(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f"the string {v[:40]!r}"
    return type(v).__name__ if not isinstance(v, (list, dict)) else ("a list" if isinstance(v, list) else "an object")
