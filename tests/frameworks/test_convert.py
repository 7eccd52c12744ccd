"""Converting scikit-learn, XGBoost and LightGBM models to ONNX (build --runtime onnx): the converted model answers
what the native one does, within the stated tolerance, or the conversion is refused with the reason."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.kernel_ridge import KernelRidge
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import modelport
from modelport.errors import ConversionError
from modelport.frameworks import get_adapter
from modelport.frameworks.convert import Tolerance, convert, convert_model, generated_rows
from modelport.training.trainer import train
from tests.helpers import run_in_process

pytest.importorskip("skl2onnx")

RNG = np.random.default_rng(1)
# Features of different scales, as in a real table (an area, a count, an age, a price).
X = RNG.normal(size=(300, 4)) * [100.0, 3.0, 20.0, 1e4]
Y = X @ [2.0, -1.0, 0.5, 1e-3] + 7 + RNG.normal(size=300)
LABELS = np.where(np.median(Y) < Y, "high", "low")
FRESH = RNG.normal(size=(500, 4)) * [100.0, 3.0, 20.0, 1e4]  # rows neither the fit nor the check saw


def converted_and_native(store, model, name: str, **save):
    mv = modelport.save_model(model, name, store=store, **save)
    files = store.read_files(mv)
    conversion = convert(mv, files)
    served = get_adapter("onnx").load(conversion.packed.files, conversion.packed.signature, conversion.packed.extra)
    return mv, conversion, served, get_adapter(mv.framework).load(files, mv.signature, mv.extra)


def assert_regression_matches(served, native, tol: Tolerance = Tolerance()) -> None:
    np.testing.assert_allclose(served.predict(FRESH), native.predict(FRESH), rtol=tol.rtol, atol=tol.atol)


@pytest.mark.parametrize("model", [LinearRegression(), make_pipeline(StandardScaler(), LinearRegression()),
                                   RandomForestRegressor(n_estimators=10, max_depth=6, random_state=0)],
                         ids=["linear", "scaler-pipeline", "random-forest"])
def test_sklearn_regressors_convert_and_predict_as_the_native_model(store, model) -> None:
    mv, conversion, served, native = converted_and_native(store, model.fit(X, Y), "reg")
    assert conversion.packed.signature == mv.signature and conversion.packed.task == "regression"
    assert set(conversion.packed.libraries) == {"onnxruntime", "numpy"}
    assert conversion.rows_from == "241 generated" and conversion.rows == len(generated_rows(4)) == 241
    assert conversion.max_abs_error <= conversion.tolerance.atol + conversion.tolerance.rtol * np.abs(native.predict(X)).max()
    # Linear models and scalers keep double precision; trees compute in float32, as scikit-learn's do.
    assert conversion.dtype == ("float32" if isinstance(model, RandomForestRegressor) else "float64")
    assert_regression_matches(served, native)
    assert conversion.packed.extra["onnx_check"]["max_abs_error"] == conversion.max_abs_error
    assert conversion.packed.extra["converted_from"] == {"framework": "sklearn", "sha256": mv.digest,
                                                         "estimator": mv.extra["estimator"]}


@pytest.mark.parametrize("model", [make_pipeline(StandardScaler(), LogisticRegression()),
                                   RandomForestClassifier(n_estimators=10, random_state=0)],
                         ids=["logistic-pipeline", "random-forest"])
def test_sklearn_classifiers_keep_their_labels_and_probabilities(store, model) -> None:
    mv, conversion, served, native = converted_and_native(store, model.fit(X, LABELS), "clf")
    assert mv.signature["classes"] == ["high", "low"]
    np.testing.assert_array_equal(served.predict(FRESH), native.predict(FRESH))
    np.testing.assert_allclose(served.predict_proba(FRESH), native.predict_proba(FRESH), atol=Tolerance().proba_atol)
    assert conversion.max_abs_error <= Tolerance().proba_atol


def test_xgboost_and_lightgbm_convert_with_missing_values(store) -> None:
    xgb = pytest.importorskip("xgboost")
    lgb = pytest.importorskip("lightgbm")
    holes = X.copy()
    holes[::5, 1] = np.nan
    fresh = FRESH.copy()
    fresh[::3, 2] = np.nan
    for model, y in [(xgb.XGBRegressor(n_estimators=20, max_depth=3), Y),
                     (xgb.XGBClassifier(n_estimators=20, max_depth=3), (np.median(Y) < Y).astype(int)),
                     (lgb.LGBMRegressor(n_estimators=20, verbose=-1), Y),
                     (lgb.LGBMClassifier(n_estimators=20, verbose=-1), LABELS)]:
        mv, conversion, served, native = converted_and_native(store, model.fit(holes, y), type(model).__name__.lower())
        # The check itself covers missing values: the model accepts them.
        assert mv.signature["allow_nan"] and conversion.rows > len(generated_rows(4))
        assert served.input_limit == float(np.finfo(np.float32).max)
        if mv.task == "regression":
            np.testing.assert_allclose(served.predict(fresh), native.predict(fresh), rtol=1e-4, atol=1e-4 * np.abs(Y).max())
        else:
            np.testing.assert_array_equal(served.predict(fresh), native.predict(fresh))
            np.testing.assert_allclose(served.predict_proba(fresh), native.predict_proba(fresh), atol=1e-4)


def test_a_conversion_is_checked_on_the_test_rows_kept_at_training(store, regression_csv) -> None:
    path, x, _ = regression_csv
    result = train(path, "target", "trained", model="random-forest", store=store)
    assert len(result.version.extra["test_rows"]) == 32  # of the 40 held-out rows
    conversion = convert(result.version, store.read_files(result.version))
    assert (conversion.rows_from, conversion.rows) == ("32 test rows, 241 generated", 273)
    assert "on 273 rows (32 test rows, 241 generated)" in conversion.summary()
    given = convert_model("trained:1", rows=x[:5], store=store)
    assert (given.rows_from, given.rows) == ("5 given", 5)


def test_a_model_without_a_converter_is_refused_with_the_reason(store) -> None:
    mv = modelport.save_model(KernelRidge().fit(X[:50], Y[:50]), "kernel", store=store)
    with pytest.raises(ConversionError, match=r"kernel:1 \(sklearn\.kernel_ridge\.KernelRidge\) cannot be served by "
                                              r"onnxruntime: .*shape calculator.*--runtime native"):
        convert(mv, store.read_files(mv))


def test_a_conversion_that_does_not_match_is_refused(store) -> None:
    """A forest converted to ONNX computes in float32: within the stated tolerance of the native model, not
    equal to it, so a tolerance of zero refuses it and names the row."""
    model = RandomForestRegressor(n_estimators=10, random_state=0).fit(X, Y)
    mv = modelport.save_model(model, "forest", store=store)
    with pytest.raises(ConversionError, match=r"float32: predictions differ on row \d+ of \d+: native .*, ONNX .*"):
        convert(mv, store.read_files(mv), tolerance=Tolerance(rtol=0, atol=0))
    convert(mv, store.read_files(mv))  # the default tolerance accepts it


def test_a_converter_that_answers_otherwise_is_refused(store) -> None:
    """onnxmltools converts an XGBoost reg:logistic regressor without its sigmoid: the check sees it."""
    xgb = pytest.importorskip("xgboost")
    model = xgb.XGBRegressor(n_estimators=10, objective="reg:logistic").fit(X, (X[:, 0] > 0) * 0.8 + 0.1)
    mv = modelport.save_model(model, "logistic", store=store)
    with pytest.raises(ConversionError, match=r"logistic:1 \(XGBRegressor\) cannot be served by onnxruntime: float32: "
                                              r"predictions differ on row 0 of \d+: native 0\.\d+, ONNX -?\d"):
        convert(mv, store.read_files(mv))


def test_models_of_other_frameworks_are_refused(store, tmp_path: Path) -> None:
    from tests.fixtures_images import tiny_onnx

    mv = modelport.import_model("tiny", tiny_onnx(tmp_path / "tiny.onnx"), store=store)
    with pytest.raises(ConversionError, match="tiny:1 is a onnx model: the ONNX runtime converts sklearn, xgboost, "
                                              "lightgbm models only"):
        convert(mv, store.read_files(mv))


def test_check_rows_of_the_wrong_width_are_refused(store) -> None:
    mv = modelport.save_model(LinearRegression().fit(X, Y), "lin", store=store)
    with pytest.raises(ConversionError, match=r"check rows have shape \(2, 3\); the model takes rows of 4 features"):
        convert(mv, store.read_files(mv), rows=np.zeros((2, 3)))


def test_build_context_with_the_onnx_runtime_has_no_scikit_learn(home: Path, tmp_path: Path, serve) -> None:
    native = LinearRegression().fit(X, Y)
    modelport.save_model(native, "lin")
    out = run_in_process("build", "lin:1", "--runtime", "onnx", "--context-only", str(tmp_path / "ctx"))
    assert "ONNX (float64) matches the native model on 241 rows (241 generated)" in out.stdout
    lock = (tmp_path / "ctx" / "wheels" / "requirements.lock").read_text().split()
    names = {line.split("==")[0] for line in lock}
    assert "onnxruntime" in names and not names & {"scikit-learn", "scipy", "skops", "joblib", "threadpoolctl"}
    dockerfile = (tmp_path / "ctx" / "Dockerfile").read_text()
    assert 'io.modelport.runtime="onnx"' in dockerfile and 'io.modelport.framework="sklearn"' in dockerfile

    from modelport.store.bundle import BundleDirectory

    served = BundleDirectory(tmp_path / "ctx" / "model").resolve("lin:1")
    assert (served.framework, served.task, list(served.files)) == ("onnx", "regression", ["model.onnx"])
    # The image's model directory served as the image serves it: the same API and feature names as the native model.
    server = serve("lin:1", env={"MODELPORT_MODEL_DIR": str(tmp_path / "ctx" / "model")})
    r = httpx.post(f"{server.url}/predict", json={"instances": FRESH[:20].tolist()}, timeout=10)
    np.testing.assert_allclose(r.json()["predictions"], native.predict(FRESH[:20]), rtol=1e-9)
    v2 = httpx.post(f"{server.url}/v2/models/lin/infer", timeout=10, json={
        "inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP64", "data": FRESH[:2].ravel().tolist()}]})
    assert v2.json()["outputs"][0]["name"] == "predictions"
    np.testing.assert_allclose(v2.json()["outputs"][0]["data"], native.predict(FRESH[:2]), rtol=1e-9)
    assert httpx.get(f"{server.url}/v2/models/lin", timeout=10).json()["inputs"] == [
        {"name": "input", "datatype": "FP64", "shape": [-1, 4]}]


def test_build_refuses_an_unconvertible_model_before_building(home: Path, tmp_path: Path) -> None:
    modelport.save_model(KernelRidge().fit(X[:50], Y[:50]), "kernel")
    out = run_in_process("build", "kernel:1", "--runtime", "onnx", "--context-only", str(tmp_path / "ctx"), check=False)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "cannot be served by onnxruntime" in out.stderr
    assert not (tmp_path / "ctx" / "wheels").exists()
    bad = run_in_process("build", "kernel:1", "--runtime", "tflite", "--context-only", str(tmp_path / "c2"), check=False)
    assert bad.returncode != 0 and "Unknown runtime 'tflite'; choose one of: native, onnx" in bad.stderr


def test_without_the_converters_the_extra_to_install_is_named(store, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from modelport.extras import MissingExtraError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "skl2onnx" else real(name, *a))
    mv = modelport.save_model(LinearRegression().fit(X, Y), "lin", store=store)
    with pytest.raises(MissingExtraError, match=r"Converting a model to ONNX needs skl2onnx, .*pip install 'modelport\[convert\]'"):
        convert(mv, store.read_files(mv))
