"""scikit-learn models, stored with skops: loading never unpickles arbitrary objects."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from modelport.errors import FrameworkError, UnsafeModelError
from modelport.frameworks.base import CLASSIFICATION, REGRESSION, Packed, Predictor, tabular_signature, versions_of

# Types a skops file may contain beyond skops' own defaults. Anything else is refused.
TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.", "collections.", "builtins.")
FILE_NAME = "model.skops"


class SklearnPredictor(Predictor):
    def __init__(self, model: Any) -> None:
        self.model = model
        self.classes = list(model.classes_) if hasattr(model, "classes_") else None
        self._linear = _linear_weights(model)
        if _computes_in_float32(model):
            self.input_limit = float(np.finfo(np.float32).max)

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self._linear is not None:
            # The same arithmetic as LinearModel.predict, minus sklearn's per-call validation.
            coef, intercept = self._linear
            return x @ coef + intercept
        return np.asarray(self.model.predict(x))

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        if not hasattr(self.model, "predict_proba"):
            raise FrameworkError(f"{type(self.model).__name__} does not give probabilities")
        return self.model.predict_proba(x)


def _linear_weights(model: Any) -> tuple[np.ndarray, Any] | None:
    from sklearn.base import is_regressor
    from sklearn.linear_model._base import LinearModel

    if isinstance(model, LinearModel) and is_regressor(model) and isinstance(getattr(model, "coef_", None), np.ndarray):
        return model.coef_.T, model.intercept_
    return None


def _computes_in_float32(model: Any) -> bool:
    """Trees and the ensembles built on them cast inputs to float32 (sklearn.tree's DTYPE);
    a pipeline holding one may pass it values that overflow, so it counts too."""
    from sklearn.ensemble import IsolationForest
    from sklearn.ensemble._forest import BaseForest
    from sklearn.ensemble._gb import BaseGradientBoosting
    from sklearn.tree import BaseDecisionTree

    if isinstance(model, (BaseDecisionTree, BaseForest, BaseGradientBoosting, IsolationForest)):
        return True
    steps = getattr(model, "steps", None) or []
    return any(_computes_in_float32(step) for _, step in steps if hasattr(step, "fit"))


class SklearnAdapter:
    name = "sklearn"
    module = "sklearn"
    requirements = ("scikit-learn", "skops", "numpy", "scipy")

    def preload(self) -> None:
        """What loading a model imports (skops' walk imports all of scikit-learn): a server that forks
        its workers does it once, before the fork (serving.server.forked_workers)."""
        skops_io()

    def accepts(self, obj: Any) -> bool:
        return type(obj).__module__.startswith("sklearn.") or hasattr(obj, "_sklearn_auto_wrap_output_keys") or (
            hasattr(obj, "fit") and hasattr(obj, "predict") and hasattr(obj, "get_params")
            and not type(obj).__module__.startswith(("xgboost.", "lightgbm."))
        )

    def pack(self, obj: Any, *, feature_names: list[str] | None = None,
             input_example: Any = None) -> Packed:
        from sklearn.base import is_classifier

        sio = skops_io()

        if not hasattr(obj, "n_features_in_"):
            raise FrameworkError(f"{type(obj).__name__} is not fitted: fit it before saving")
        if feature_names is None and hasattr(obj, "feature_names_in_"):
            feature_names = list(obj.feature_names_in_)
        task = CLASSIFICATION if is_classifier(obj) else REGRESSION
        classes = list(obj.classes_) if task == CLASSIFICATION and hasattr(obj, "classes_") else None
        allow_nan = bool(getattr(obj, "_get_tags", None) and _allows_nan(obj))
        return Packed(
            files={FILE_NAME: sio.dumps(obj)},
            task=task,
            signature=tabular_signature(obj.n_features_in_, feature_names, task=task, classes=classes, allow_nan=allow_nan),
            libraries=versions_of("scikit-learn", "skops", "numpy", "scipy"),
            extra={"estimator": f"{type(obj).__module__}.{type(obj).__qualname__}"},
        )

    def accepts_file(self, path: Path, head: bytes) -> bool:
        return path.suffix == ".skops"

    def pack_file(self, path: Path) -> Packed:
        return self.pack(load_skops(path.read_bytes()))

    def load(self, files: dict[str, bytes], signature: dict[str, Any], extra: dict[str, Any]) -> Predictor:
        model = load_skops(files[FILE_NAME])
        # Fitted sklearn models warn when given arrays without the names they were fitted on.
        if hasattr(model, "feature_names_in_"):
            del model.feature_names_in_
        return SklearnPredictor(model)


def skops_io() -> ModuleType:
    """``skops.io``, imported without PyTorch. Its import lists scikit-learn's estimators
    (``sklearn.utils.all_estimators``), whose walk of sklearn's packages imports every package on the
    way, ``sklearn.externals.array_api_compat.torch`` too, which imports torch (seconds) when it is
    installed, though the walk lists nothing from ``externals``. That one package is hidden for the
    import; array-API dispatch to torch, if a user turns it on, imports it later as usual."""
    if "skops.io" in sys.modules:
        return sys.modules["skops.io"]
    hidden = "sklearn.externals.array_api_compat.torch"
    hide = hidden not in sys.modules
    if hide:
        sys.modules[hidden] = None  # type: ignore[assignment]  # an import of it fails: the walk skips it
    try:
        import skops.io
    finally:
        if hide and sys.modules.get(hidden, ...) is None:
            del sys.modules[hidden]
    return skops.io


def load_skops(data: bytes) -> Any:
    sio = skops_io()
    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as e:
        raise FrameworkError(f"Not a readable skops file: {e}") from None
    refused = [t for t in untrusted if not t.startswith(TRUSTED_PREFIXES)]
    if refused:
        raise UnsafeModelError(
            "Refusing to load a scikit-learn model that contains types outside scikit-learn, numpy and "
            f"scipy: {', '.join(refused)}"
        )
    return sio.loads(data, trusted=untrusted)


def _allows_nan(model: Any) -> bool:
    try:
        from sklearn.utils import get_tags

        return bool(get_tags(model).input_tags.allow_nan)
    except Exception:
        return False
