"""An imported ONNX model shaped like a table (one numeric [batch, n] input, one output) is served through
/predict like any tabular model; any other ONNX model is told, at import and by /predict, to use v2
(issue 12 item 10)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression
from typer.testing import CliRunner

import modelport
from modelport.cli.main import app
from modelport.store import ModelStore
from tests.fixtures_serving import serve_in_process
from tests.helpers import run_in_process

RNG = np.random.default_rng(0)
X = RNG.normal(size=(60, 4))
Y = X @ [1.0, -2.0, 0.5, 3.0] + 1


def regressor_onnx(path: Path) -> tuple[Path, LinearRegression]:
    """What skl2onnx makes of a LinearRegression: "float_input" [None, 4] FP32 → "variable" [None, 1]."""
    import onnx
    from onnx import TensorProto, helper

    reg = LinearRegression().fit(X, Y)
    w = helper.make_tensor("coef", TensorProto.FLOAT, [4, 1], reg.coef_.astype(np.float32).tolist())
    b = helper.make_tensor("intercept", TensorProto.FLOAT, [1], [float(reg.intercept_)])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["float_input", "coef"], ["xw"]), helper.make_node("Add", ["xw", "intercept"], ["variable"])],
        "linear", [helper.make_tensor_value_info("float_input", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("variable", TensorProto.FLOAT, [None, 1])], initializer=[w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path, reg


def two_inputs_onnx(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"])], "adder",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, 4]) for n in ("a", "b")],
        [helper.make_tensor_value_info("sum", TensorProto.FLOAT, [None, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _import(name: str, path: Path, *options: str) -> str:
    out = CliRunner().invoke(app, ["import", name, str(path), *options])
    assert out.exit_code == 0, out.output
    return " ".join(out.output.split())


def test_tabular_onnx_is_served_through_predict(store: ModelStore, tmp_path: Path) -> None:
    path, reg = regressor_onnx(tmp_path / "model.onnx")
    said = _import("onx", path)
    assert "Registered onx:1 (onnx, tensor)" in said and "/predict takes its 4 features (f0, f1, f2, f3)" in said
    expected = reg.predict(X[:3])
    client, _ = serve_in_process(store, ["onx"])
    with client:
        one = client.post("/predict", json={"features": X[0].tolist()})
        assert one.status_code == 200, one.text
        assert one.json()["prediction"] == pytest.approx(expected[0], rel=1e-5)
        named = client.post("/predict", json={"features": dict(zip(["f0", "f1", "f2", "f3"], X[0].tolist(), strict=True))})
        assert named.json() == one.json()
        many = client.post("/models/onx/predict", json={"instances": X[:3].tolist()})
        assert many.status_code == 200, many.text
        np.testing.assert_allclose(many.json()["predictions"], expected, rtol=1e-5)
        short = client.post("/predict", json={"features": [1.0, 2.0]})
        assert short.status_code == 400 and "the model expects 4 (f0, f1, f2, f3)" in short.json()["error"]
        # v2 keeps the model's own tensor names
        v2 = client.post("/v2/models/onx/infer", json={"inputs": [
            {"name": "float_input", "shape": [3, 4], "datatype": "FP32", "data": X[:3].ravel().tolist()}]})
        assert v2.status_code == 200, v2.text
        (out,) = v2.json()["outputs"]
        assert out["name"] == "variable" and out["shape"] == [3, 1]
        np.testing.assert_allclose(out["data"], expected, rtol=1e-5)
        assert client.get("/models").json()["models"][0]["features"] == ["f0", "f1", "f2", "f3"]
        spec = client.get("/openapi.json").json()
        body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        row_list = body["oneOf"][0]["properties"]["features"]["oneOf"][0]
        assert (row_list["minItems"], row_list["maxItems"]) == (4, 4)
    shown = CliRunner().invoke(app, ["models", "show", "onx"])
    assert "/predict     4 features: f0, f1, f2, f3" in shown.output, shown.output


def test_other_onnx_models_are_pointed_at_v2(store: ModelStore, tmp_path: Path) -> None:
    said = _import("adder", two_inputs_onnx(tmp_path / "adder.onnx"))
    assert "/predict is not available for this model" in said and "POST /v2/models/adder/infer" in said
    client, _ = serve_in_process(store, ["adder"])
    with client:
        r = client.post("/predict", json={"features": [1.0, 2.0, 3.0, 4.0]})
        assert r.status_code == 400
        assert "/predict is not available for model 'adder'" in r.json()["error"]
        assert "POST /v2/models/adder/infer" in r.json()["error"]
        assert "/predict" not in client.get("/openapi.json").json()["paths"]
        assert "features" not in client.get("/models").json()["models"][0]


def test_feature_names_given_with_an_onnx_model_name_its_columns(store: ModelStore, tmp_path: Path) -> None:
    import onnx

    path, reg = regressor_onnx(tmp_path / "model.onnx")
    mv = modelport.save_model(onnx.load(path), "named", feature_names=["a", "b", "c", "d"], store=store)
    assert mv.signature["features"] == ["a", "b", "c", "d"]
    np.testing.assert_allclose(modelport.load_model("named", store=store).predict(X[:3]), reg.predict(X[:3]), rtol=1e-5)


def test_import_features_names_the_columns(store: ModelStore, tmp_path: Path) -> None:
    path, reg = regressor_onnx(tmp_path / "model.onnx")
    said = _import("onx", path, "--features", "rooms, area,age,floor")
    assert "/predict takes its 4 features (rooms, area, age, floor)" in said
    client, _ = serve_in_process(store, ["onx"])
    with client:
        r = client.post("/predict", json={"features": dict(zip(["rooms", "area", "age", "floor"], X[0].tolist(), strict=True))})
        assert r.status_code == 200, r.text
        assert r.json()["prediction"] == pytest.approx(reg.predict(X[:1])[0], rel=1e-5)


@pytest.mark.parametrize(("features", "error"), [
    ("a,b", "2 feature names given; the model's input has 4 columns"),
    ("a,b,a,c", "Feature names must be distinct and non-empty"),
])
def test_import_refuses_feature_names_that_do_not_fit(home: Path, tmp_path: Path,
                                                      features: str, error: str) -> None:
    path, _ = regressor_onnx(tmp_path / "model.onnx")
    out = run_in_process("import", "onx", str(path), "--features", features, check=False)
    assert out.returncode == 1 and error in out.stderr, out.stderr
    out = run_in_process("import", "adder", str(two_inputs_onnx(tmp_path / "adder.onnx")), "--features", "a,b,c,d", check=False)
    assert out.returncode == 1 and "one numeric input of shape [batch, n]" in out.stderr, out.stderr

