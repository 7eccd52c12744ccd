from __future__ import annotations

import pickle
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import modelport
from modelport.errors import FrameworkError, UnsafeModelError
from modelport.frameworks.sklearn import load_skops

RNG = np.random.default_rng(0)
X = RNG.normal(size=(120, 4))
Y_REG = X @ [1.0, -2.0, 0.5, 3.0] + 1
Y_CLS = (Y_REG > 1).astype(int)


@pytest.mark.parametrize("model", [LinearRegression(), Ridge(alpha=0.5), make_pipeline(StandardScaler(), LinearRegression())])
def test_sklearn_regressors_roundtrip_exactly(store, model) -> None:
    model.fit(X, Y_REG)
    mv = modelport.save_model(model, "reg", store=store)
    assert (mv.framework, mv.task, len(mv.signature["features"])) == ("sklearn", "regression", 4)
    np.testing.assert_array_equal(modelport.load_model("reg", store=store).predict(X), model.predict(X))


def test_sklearn_classifier_keeps_classes_and_probabilities(store) -> None:
    model = RandomForestClassifier(n_estimators=10, random_state=0).fit(X, np.where(Y_CLS, "yes", "no"))
    mv = modelport.save_model(model, "clf", store=store)
    assert mv.task == "classification" and mv.signature["classes"] == ["no", "yes"]
    loaded = modelport.load_model("clf", store=store)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    np.testing.assert_allclose(loaded.predict_proba(X), model.predict_proba(X))


def test_feature_names_come_from_a_dataframe(store) -> None:
    import pandas as pd

    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    mv = modelport.save_model(LogisticRegression().fit(frame, Y_CLS), "named", store=store)
    assert mv.signature["features"] == ["a", "b", "c", "d"]


def test_unfitted_model_is_refused(store) -> None:
    with pytest.raises(FrameworkError, match="not fitted"):
        modelport.save_model(LinearRegression(), "x", store=store)


def test_skops_file_with_foreign_types_is_refused() -> None:
    import skops.io as sio

    data = sio.dumps({"model": LinearRegression().fit(X, Y_REG), "evil": np.timedelta64(1)})
    # numpy types are trusted; a foreign module is not
    load_skops(data)
    from collections import OrderedDict  # trusted prefix collections.

    load_skops(sio.dumps(OrderedDict(a=1)))
    from fractions import Fraction

    with pytest.raises(UnsafeModelError, match="fractions.Fraction"):
        load_skops(sio.dumps({"x": Fraction(1, 3)}))


def test_pickle_import_needs_trust_and_is_converted(store, tmp_path: Path) -> None:
    model = LinearRegression().fit(X, Y_REG)
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(model))
    with pytest.raises(UnsafeModelError, match="--trust-pickle"):
        modelport.import_model("imp", path, store=store)
    mv = modelport.import_model("imp", path, trust_pickle=True, store=store)
    assert mv.framework == "sklearn" and list(mv.files) == ["model.skops"]
    np.testing.assert_array_equal(modelport.load_model("imp", store=store).predict(X), model.predict(X))
    jl = tmp_path / "model.joblib"
    joblib.dump(model, jl)
    assert modelport.import_model("imp", jl, trust_pickle=True, store=store).version == 2


def test_xgboost_roundtrip(store, tmp_path: Path) -> None:
    import xgboost as xgb

    reg = xgb.XGBRegressor(n_estimators=10).fit(X, Y_REG)
    mv = modelport.save_model(reg, "xgb", store=store)
    assert mv.signature["allow_nan"] is True
    np.testing.assert_allclose(modelport.load_model("xgb", store=store).predict(X), reg.predict(X), rtol=1e-6)
    clf = xgb.XGBClassifier(n_estimators=10).fit(X, Y_CLS)
    modelport.save_model(clf, "xgbc", store=store)
    loaded = modelport.load_model("xgbc", store=store)
    np.testing.assert_array_equal(loaded.predict(X), clf.predict(X))
    np.testing.assert_allclose(loaded.predict_proba(X), clf.predict_proba(X), rtol=1e-6)
    path = tmp_path / "m.ubj"
    reg.save_model(path)
    mv = modelport.import_model("xgbfile", path, store=store)
    assert mv.framework == "xgboost" and mv.task == "regression"
    np.testing.assert_allclose(modelport.load_model("xgbfile", store=store).predict(X), reg.predict(X), rtol=1e-6)


def test_xgboost_serves_from_the_booster_as_the_wrappers_predict(store) -> None:
    """Loaded without scikit-learn's wrappers (images carry no scikit-learn): same answers, multi-class and
    DataFrame-trained models included; objectives whose output means something else are refused at save time."""
    import pandas as pd
    import xgboost as xgb

    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    y3 = np.digitize(Y_REG, np.quantile(Y_REG, [0.33, 0.66]))
    for est, y in ((xgb.XGBRegressor(n_estimators=8), Y_REG), (xgb.XGBClassifier(n_estimators=8), Y_CLS),
                   (xgb.XGBClassifier(n_estimators=8), y3), (xgb.XGBRegressor(n_estimators=8, objective="count:poisson"), np.abs(Y_REG))):
        est.fit(frame, y)
        loaded = modelport.load_model(modelport.save_model(est, "xgbb", store=store).ref, store=store)
        np.testing.assert_allclose(loaded.predict(X), est.predict(frame), rtol=1e-6)
        if isinstance(est, xgb.XGBClassifier):
            np.testing.assert_allclose(loaded.predict_proba(X), est.predict_proba(frame), rtol=1e-6)
    softmax = xgb.XGBClassifier(n_estimators=4, objective="multi:softmax").fit(X, y3)
    with pytest.raises(FrameworkError, match="objective 'multi:softmax' are not supported"):
        modelport.save_model(softmax, "xgbs", store=store)


def test_lightgbm_roundtrip(store, tmp_path: Path) -> None:
    import lightgbm as lgb

    clf = lgb.LGBMClassifier(n_estimators=10, verbose=-1).fit(X, Y_CLS)
    modelport.save_model(clf, "lgb", store=store)
    loaded = modelport.load_model("lgb", store=store)
    np.testing.assert_array_equal(loaded.predict(X), clf.predict(X))
    np.testing.assert_allclose(loaded.predict_proba(X), clf.predict_proba(X), rtol=1e-6)
    path = tmp_path / "model.txt"
    reg = lgb.LGBMRegressor(n_estimators=10, verbose=-1).fit(X, Y_REG)
    reg.booster_.save_model(path)
    mv = modelport.import_model("lgbfile", path, store=store)
    assert mv.framework == "lightgbm"
    np.testing.assert_allclose(modelport.load_model("lgbfile", store=store).predict(X), reg.predict(X))


def test_onnx_import_and_signature(store, tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    # y = x @ W + b, written by hand so the test needs no converter
    w = helper.make_tensor("W", TensorProto.FLOAT, [4, 2], np.arange(8, dtype=np.float32).tolist())
    b = helper.make_tensor("B", TensorProto.FLOAT, [2], [0.5, -0.5])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "B"], ["y"])], "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])], initializer=[w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "affine.onnx"
    onnx.save(model, path)
    mv = modelport.import_model("affine", path, store=store)
    assert mv.signature["inputs"] == [{"name": "x", "dtype": "float32", "shape": [-1, 4]}]
    out = modelport.load_model("affine", store=store).predictor.infer({"x": X[:3].astype(np.float32)})
    np.testing.assert_allclose(out["y"], X[:3].astype(np.float32) @ np.arange(8, dtype=np.float32).reshape(4, 2) + [0.5, -0.5], rtol=1e-5)


def test_unknown_file_type_is_refused(store, tmp_path: Path) -> None:
    path = tmp_path / "weird.bin"
    path.write_bytes(b"\x00\x01")
    with pytest.raises(FrameworkError, match="Cannot tell the framework"):
        modelport.import_model("w", path, store=store)


@pytest.mark.torch
def test_torchscript_roundtrip(store) -> None:
    import torch
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    example = X[:2].astype(np.float32)
    mv = modelport.save_model(net, "net", input_example=example, store=store)
    assert mv.framework == "torch" and mv.signature["inputs"][0]["shape"] == [-1, 4]
    with torch.inference_mode():
        expected = net(torch.from_numpy(X.astype(np.float32))).numpy()
    np.testing.assert_allclose(modelport.load_model("net", store=store).predict(X.astype(np.float32)), expected, rtol=1e-5)
