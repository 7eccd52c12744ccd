"""XGBoost and LightGBM models, stored in their own text/binary formats (no pickle)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from modelport.errors import FrameworkError
from modelport.frameworks.base import CLASSIFICATION, REGRESSION, Packed, Predictor, tabular_signature, versions_of


class BoosterPredictor(Predictor):
    """A gradient-boosting booster's outputs → labels and probabilities, as the libraries'
    scikit-learn wrappers compute them, without needing scikit-learn to serve."""

    def __init__(self, scores: Callable[[np.ndarray], np.ndarray], classes: list[Any] | None) -> None:
        self.scores = scores  # rows → predictions (regression) or class probabilities
        self.classes = classes

    def predict(self, x: np.ndarray) -> np.ndarray:
        out = np.asarray(self.scores(x))
        if self.classes is None:
            return out
        idx = (out > 0.5).astype(int) if out.ndim == 1 else out.argmax(axis=1)
        return np.asarray(self.classes)[idx]

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        if self.classes is None:
            raise FrameworkError("A regression model has no class probabilities")
        out = np.asarray(self.scores(x))
        return np.column_stack([1 - out, out]) if out.ndim == 1 else out


class XGBoostAdapter:
    name = "xgboost"
    module = "xgboost"
    requirements = ("xgboost", "numpy", "scipy")
    FILE = "model.ubj"

    def accepts(self, obj: Any) -> bool:
        return type(obj).__module__.startswith("xgboost.")

    def pack(self, obj: Any, *, feature_names: list[str] | None = None,
             input_example: Any = None) -> Packed:
        import xgboost as xgb

        if isinstance(obj, xgb.Booster):
            raise FrameworkError("Save the scikit-learn wrapper (XGBRegressor / XGBClassifier), not a raw Booster")
        task = CLASSIFICATION if isinstance(obj, xgb.XGBClassifier) else REGRESSION
        booster = obj.get_booster()
        check_objective(booster, classifier=task == CLASSIFICATION)
        n = booster.num_features()
        names = feature_names or booster.feature_names
        classes = [c.item() if isinstance(c, np.generic) else c for c in obj.classes_] if task == CLASSIFICATION else None
        return Packed(
            files={self.FILE: bytes(obj.get_booster().save_raw(raw_format="ubj"))},
            task=task,
            signature=tabular_signature(n, names, task=task, classes=classes, allow_nan=True),
            libraries=versions_of("xgboost", "numpy", "scipy"),
            extra={"estimator": type(obj).__name__},
        )

    def accepts_file(self, path: Path, head: bytes) -> bool:
        return path.suffix in (".ubj", ".xgb") or (path.suffix == ".json" and b'"learner"' in head)

    def pack_file(self, path: Path) -> Packed:
        import xgboost as xgb

        booster = xgb.Booster()
        booster.load_model(bytearray(path.read_bytes()))
        objective = json.loads(booster.save_config())["learner"]["objective"]["name"]
        est = xgb.XGBClassifier() if objective.startswith(("binary:", "multi:")) else xgb.XGBRegressor()
        est.load_model(bytearray(path.read_bytes()))
        return self.pack(est)

    def load(self, files: dict[str, bytes], signature: dict[str, Any], extra: dict[str, Any]) -> Predictor:
        import xgboost as xgb

        booster = xgb.Booster()
        booster.load_model(bytearray(files[self.FILE]))
        check_objective(booster, classifier=extra.get("estimator") == "XGBClassifier")
        return BoosterPredictor(booster.inplace_predict, signature.get("classes"))


def check_objective(booster: Any, *, classifier: bool) -> None:
    objective = json.loads(booster.save_config())["learner"]["objective"]["name"]
    if objective not in _XGB_OBJECTIVES[classifier]:
        kind = "classifiers" if classifier else "regressors"
        raise FrameworkError(f"XGBoost {kind} with objective {objective!r} are not supported; "
                             f"supported: {', '.join(sorted(_XGB_OBJECTIVES[classifier]))}")


# Objectives whose booster output is what the wrapper's predict (regressors) or predict_proba
# (classifiers: the probability of class 1, or one per class) returns.
_XGB_OBJECTIVES = {
    False: {"reg:squarederror", "reg:squaredlogerror", "reg:pseudohubererror", "reg:absoluteerror", "reg:quantileerror",
            "reg:logistic", "reg:gamma", "reg:tweedie", "count:poisson"},
    True: {"binary:logistic", "multi:softprob"},
}


class LightGBMAdapter:
    name = "lightgbm"
    module = "lightgbm"
    requirements = ("lightgbm", "numpy", "scipy")
    FILE = "model.txt"

    def accepts(self, obj: Any) -> bool:
        return type(obj).__module__.startswith("lightgbm.")

    def pack(self, obj: Any, *, feature_names: list[str] | None = None,
             input_example: Any = None) -> Packed:
        import lightgbm as lgb

        booster = obj if isinstance(obj, lgb.Booster) else obj.booster_
        classes = list(obj.classes_) if isinstance(obj, lgb.LGBMClassifier) else None
        task = CLASSIFICATION if classes is not None else REGRESSION
        return Packed(
            files={self.FILE: booster.model_to_string().encode()},
            task=task,
            signature=tabular_signature(booster.num_feature(), feature_names or booster.feature_name(), task=task,
                                        classes=[c.item() if isinstance(c, np.generic) else c for c in classes] if classes else None,
                                        allow_nan=True),
            libraries=versions_of("lightgbm", "numpy", "scipy"),
        )

    def accepts_file(self, path: Path, head: bytes) -> bool:
        return head.startswith(b"tree\nversion=")

    def pack_file(self, path: Path) -> Packed:
        import lightgbm as lgb

        return self.pack(lgb.Booster(model_file=str(path)))

    def load(self, files: dict[str, bytes], signature: dict[str, Any], extra: dict[str, Any]) -> Predictor:
        import lightgbm as lgb

        return BoosterPredictor(lgb.Booster(model_str=files[self.FILE].decode()).predict, signature.get("classes"))
