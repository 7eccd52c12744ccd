"""scikit-learn, XGBoost and LightGBM models → ONNX (skl2onnx, onnxmltools), accepted only when the converted model
predicts what the native one does on the model's test rows and rows generated from its signature.

The converted model keeps the original's signature and task, so a server answers the same requests with the same
feature names; it needs onnxruntime and numpy only (no scikit-learn, SciPy or the boosting libraries)."""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from modelport.errors import ConversionError, FrameworkError
from modelport.extras import MissingExtraError, require
from modelport.frameworks import get_adapter
from modelport.frameworks.base import REGRESSION, Packed, Predictor, versions_of
from modelport.frameworks.onnx import FILE_NAME, OnnxAdapter
from modelport.store import ModelStore, ModelVersion

CONVERTIBLE = ("sklearn", "xgboost", "lightgbm")
INPUT = "input"  # the converted model's one input: [batch, n_features]
GENERATED_SEED = 0
# Opsets every converter here writes and onnxruntime runs (skl2onnx's own default for ai.onnx.ml, 4+, is one that
# some of its tree converters cannot write yet).
TARGET_OPSET = {"": 18, "ai.onnx.ml": 3}


@dataclass(frozen=True)
class Tolerance:
    """How close the converted model's answers must be to the native model's, on every checked row.
    Regression: |onnx − native| ≤ atol + rtol·|native| (float32 models differ from float64 ones by rounding).
    Classifiers: the same label on every row, each probability within ``proba_atol``."""

    rtol: float = 1e-4
    atol: float = 1e-5
    proba_atol: float = 1e-4


@dataclass
class Conversion:
    """A converted model ready to register or copy into an image, and what its check measured."""

    packed: Packed  # framework "onnx", the original's task and signature
    rows: int  # rows checked
    rows_from: str  # "32 test rows, 241 generated" (test rows kept at training) | "5 given" | "241 generated"
    dtype: str  # the converted model's input type: float64 when the converter keeps double precision
    max_abs_error: float  # regression: largest |onnx − native|; classifiers: largest probability difference
    max_rel_error: float  # regression: largest |onnx − native| / |native| (0 for classifiers)
    tolerance: Tolerance

    def summary(self) -> str:
        what = "predictions" if self.packed.task == REGRESSION else "labels equal, probabilities"
        rel = f", relative {self.max_rel_error:.2g}" if self.packed.task == REGRESSION else ""
        return (f"ONNX ({self.dtype}) matches the native model on {self.rows} rows ({self.rows_from}): {what} within "
                f"{self.max_abs_error:.2g}{rel} (tolerance {_tolerance_text(self.packed.task, self.tolerance)})")


def convert(mv: ModelVersion, files: dict[str, bytes], *, rows: Any = None,
            tolerance: Tolerance = Tolerance()) -> Conversion:
    """``mv`` (its verified ``files``) as an ONNX model, checked on ``rows`` (default: the test rows kept with the
    model, if any, and rows generated from its signature). Tries each input type of ``_DTYPES`` in turn; raises
    ConversionError, with every attempt's reason, when none converts and matches within ``tolerance``."""
    if mv.framework not in CONVERTIBLE:
        raise ConversionError(f"{mv.ref} is a {mv.framework} model: the ONNX runtime converts "
                              f"{', '.join(CONVERTIBLE)} models only")
    if mv.signature.get("kind") != "tabular":
        raise ConversionError(f"{mv.ref} has no tabular signature: only tabular models convert to ONNX")
    require_converters()
    require(mv.framework, f"Converting a {mv.framework} model")
    native = get_adapter(mv.framework).load(files, mv.signature, mv.extra)
    x, rows_from = check_rows(mv, rows)
    failures: list[str] = []
    for dtype in _DTYPES[mv.framework]:
        try:
            data, labels = _CONVERTERS[mv.framework](files, mv, dtype)
        except ConversionError as e:
            failures.append(f"{dtype}: {e}")
            continue
        source = {"framework": mv.framework, "sha256": mv.digest,
                  **({"estimator": mv.extra["estimator"]} if "estimator" in mv.extra else {})}
        extra = {"onnx_labels": labels, "onnx_probabilities": _has_probabilities(native, x, mv.task),
                 "converted_from": source}
        packed = Packed(files={FILE_NAME: data}, task=mv.task, signature=mv.signature,
                        libraries=versions_of("onnxruntime", "numpy"), extra=extra)
        try:
            converted = OnnxAdapter().load(packed.files, packed.signature, packed.extra)
            abs_err, rel_err = compare(native, converted, x, mv.task, tolerance)
        except FrameworkError as e:  # onnxruntime cannot load it, or it answers otherwise
            failures.append(f"{dtype}: {e}")
            continue
        packed.extra["onnx_check"] = {"rows": len(x), "rows_from": rows_from, "max_abs_error": abs_err,
                                      "max_rel_error": rel_err, "tolerance": asdict(tolerance)}
        return Conversion(packed, len(x), rows_from, dtype, abs_err, rel_err, tolerance)
    raise ConversionError(f"{mv.ref} ({mv.extra.get('estimator', mv.framework)}) cannot be served by onnxruntime: "
                          + "; ".join(failures) + ". Build it with the native runtime (--runtime native).")


def convert_model(ref: str, *, rows: Any = None, tolerance: Tolerance = Tolerance(),
                  store: ModelStore | None = None) -> Conversion:
    """``convert`` for a model in the store: ``convert_model("houses:1").summary()`` says whether (and how well)
    it would serve with ``build --runtime onnx``."""
    store = store or ModelStore()
    mv = store.resolve(ref)
    return convert(mv, store.read_files(mv), rows=rows, tolerance=tolerance)


def require_converters() -> None:
    """The converters are a build machine's tools (the ``convert`` extra): found by import name, so that a
    source checkout whose installed metadata predates the extra is judged by what it can import."""
    from importlib.util import find_spec

    absent = [d for d in ("skl2onnx", "onnxmltools", "onnx", "onnxruntime") if find_spec(d) is None]
    if absent:
        raise MissingExtraError("convert", "Converting a model to ONNX", absent)


def compare(native: Predictor, converted: Predictor, x: np.ndarray, task: str, tol: Tolerance) -> tuple[float, float]:
    """→ (largest absolute, largest relative error) of ``converted`` against ``native`` on ``x``; raises
    ConversionError naming the first row that is outside the tolerance."""
    try:
        want = native.predict(x)
    except Exception as e:
        raise ConversionError(f"the native model cannot predict the check rows: {str(e)[:300]}") from None
    try:
        got = converted.predict(x)
    except Exception as e:
        raise ConversionError(f"onnxruntime could not run the converted model: {str(e)[:300]}") from None
    if task == REGRESSION:
        got, want = np.asarray(got, np.float64).reshape(len(x)), np.asarray(want, np.float64).reshape(len(x))
        diff = np.abs(got - want)
        bad = ~(diff <= tol.atol + tol.rtol * np.abs(want))  # NaN on either side is a mismatch too
        if bad.any():
            i = int(np.argmax(bad))
            raise ConversionError(f"predictions differ on row {i} of {len(x)}: native {want[i]:.9g}, ONNX {got[i]:.9g} "
                                  f"(tolerance {_tolerance_text(task, tol)}); largest difference {np.nanmax(diff):.3g}")
        rel = diff / np.maximum(np.abs(want), np.finfo(np.float64).tiny)
        return float(diff.max(initial=0.0)), float(rel.max(initial=0.0))
    got, want = np.asarray(got).reshape(len(x)), np.asarray(want).reshape(len(x))
    unequal = got != want
    if unequal.any():
        i = int(np.argmax(unequal))
        raise ConversionError(f"labels differ on {int(unequal.sum())} of {len(x)} rows (row {i}: native {str(want[i])!r}, "
                              f"ONNX {str(got[i])!r})")
    try:
        p_want = native.predict_proba(x)
    except (FrameworkError, NotImplementedError):
        return 0.0, 0.0  # a classifier without probabilities (the converted one refuses them too: onnx_probabilities)
    try:
        p_got = converted.predict_proba(x)
    except Exception as e:
        raise ConversionError(f"the converted model's probabilities could not be computed: {str(e)[:300]}") from None
    if np.shape(p_got) != np.shape(p_want):
        raise ConversionError(f"probabilities of shape {np.shape(p_got)}, the native model's {np.shape(p_want)}")
    diff = np.abs(np.asarray(p_got, np.float64) - np.asarray(p_want, np.float64))
    if not (diff <= tol.proba_atol).all():
        i = int(np.argmax(~(diff <= tol.proba_atol)) // diff.shape[1])
        raise ConversionError(f"probabilities differ on row {i} of {len(x)} by {np.nanmax(diff[i]):.3g} "
                              f"(tolerance {tol.proba_atol:g})")
    return float(diff.max(initial=0.0)), 0.0


def _has_probabilities(native: Predictor, x: np.ndarray, task: str) -> bool:
    if task == REGRESSION:
        return False
    try:
        native.predict_proba(x[:1])
    except (FrameworkError, NotImplementedError):
        return False
    return True


def check_rows(mv: ModelVersion, rows: Any = None) -> tuple[np.ndarray, str]:
    """The rows a conversion is checked on, and where they come from: ``rows`` when given; else the test rows
    kept with the model (real inputs) and rows generated from its signature (inputs far from them, which a
    server may be sent too)."""
    n = len(mv.signature["features"])
    generated = generated_rows(n, allow_nan=mv.signature.get("allow_nan", False))
    if rows is not None:
        x = np.asarray(rows, dtype=np.float64)
    elif mv.extra.get("test_rows"):
        x = np.asarray(mv.extra["test_rows"], dtype=np.float64)
    else:
        return generated, f"{len(generated)} generated"
    if x.ndim != 2 or x.shape[1] != n or not len(x):
        raise ConversionError(f"the check rows have shape {x.shape}; the model takes rows of {n} features")
    if rows is not None:
        return x, f"{len(x)} given"
    return np.vstack([x, generated]), f"{len(x)} test rows, {len(generated)} generated"


def generated_rows(n: int, *, allow_nan: bool = False) -> np.ndarray:
    """Rows from the signature alone (it records no ranges): zeros, and normal values at scales from 0.01 to 10⁴,
    so that linear models are checked far from the origin and tree models on both sides of many splits; with
    missing values where the model accepts them."""
    rng = np.random.default_rng(GENERATED_SEED)
    parts = [np.zeros((1, n))] + [rng.normal(scale=s, size=(48, n)) for s in (0.01, 1.0, 10.0, 100.0, 1e4)]
    x = np.vstack(parts)
    if allow_nan:
        holes = x[1:97].copy()
        holes[rng.random(holes.shape) < 0.3] = np.nan
        x = np.vstack([x, holes])
    return x


# -- the converters: (files, version, input dtype) → (ONNX bytes, how its labels read: TabularOnnxPredictor) ------

def _sklearn(files: dict[str, bytes], mv: ModelVersion, dtype: str) -> tuple[bytes, str]:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

    from modelport.frameworks.sklearn import FILE_NAME as SKOPS
    from modelport.frameworks.sklearn import load_skops

    model = load_skops(files[SKOPS])
    tensor = DoubleTensorType if dtype == "float64" else FloatTensorType
    n = len(mv.signature["features"])
    # zipmap off: probabilities as one [batch, classes] tensor, not a list of dicts
    options = {"zipmap": False} if mv.task != REGRESSION else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            onx = convert_sklearn(model, initial_types=[(INPUT, tensor([None, n]))], options=options,
                                  target_opset=TARGET_OPSET)
        except Exception as e:
            raise ConversionError(_why(e)) from None
    return onx.SerializeToString(), "argmax" if _chooses_by_argmax(model) else "values"


def _xgboost(files: dict[str, bytes], mv: ModelVersion, dtype: str) -> tuple[bytes, str]:
    import xgboost as xgb
    from onnxmltools import convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType

    from modelport.frameworks.boosting import XGBoostAdapter

    est = xgb.XGBClassifier() if mv.extra.get("estimator") == "XGBClassifier" else xgb.XGBRegressor()
    est.load_model(bytearray(files[XGBoostAdapter.FILE]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            onx = convert_xgboost(est, initial_types=[(INPUT, FloatTensorType([None, len(mv.signature["features"])]))])
        except Exception as e:
            raise ConversionError(_why(e)) from None
    return onx.SerializeToString(), "argmax"


def _lightgbm(files: dict[str, bytes], mv: ModelVersion, dtype: str) -> tuple[bytes, str]:
    import lightgbm as lgb
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    from modelport.frameworks.boosting import LightGBMAdapter

    booster = lgb.Booster(model_str=files[LightGBMAdapter.FILE].decode())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            onx = convert_lightgbm(booster, initial_types=[(INPUT, FloatTensorType([None, len(mv.signature["features"])]))],
                                   zipmap=False)
        except Exception as e:
            raise ConversionError(_why(e)) from None
    return onx.SerializeToString(), "argmax"


def _chooses_by_argmax(model: Any) -> bool:
    """scikit-learn classifiers whose predict is the first most probable class (trees and forests)."""
    from sklearn.ensemble._forest import ForestClassifier
    from sklearn.tree import BaseDecisionTree

    final = model.steps[-1][1] if hasattr(model, "steps") else model
    return isinstance(final, (BaseDecisionTree, ForestClassifier)) and hasattr(final, "classes_")


_CONVERTERS = {"sklearn": _sklearn, "xgboost": _xgboost, "lightgbm": _lightgbm}
# Input types to try, best first: double precision where the converter keeps it (linear models, scalers; a
# tree ensemble's double conversion does not load in onnxruntime and is skipped); the boosters compute in float32
# anyway (and onnxmltools' double XGBoost graphs answer wrongly).
_DTYPES = {"sklearn": ("float64", "float32"), "xgboost": ("float32",), "lightgbm": ("float32",)}


def _why(e: Exception) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return f"the converter refused it ({type(e).__name__}: {text[:300]})"


def _tolerance_text(task: str, tol: Tolerance) -> str:
    if task == REGRESSION:
        return f"|Δ| ≤ {tol.atol:g} + {tol.rtol:g}·|native|"
    return f"equal labels, probabilities within {tol.proba_atol:g}"
