from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import modelport
from tests.helpers import run_in_process


def test_train_cli_registers_versions_with_metrics(home: Path, regression_csv) -> None:
    path, x, y = regression_csv
    out = run_in_process("train", "--data", str(path), "--target", "target", "--name", "house")
    assert "Registered house:1" in out.stdout and "r2" in out.stdout
    for step in ("Reading", "Fitting linear-regression", "Evaluating", "Registering"):
        assert step in out.stdout  # progress is shown
    info = json.loads(run_in_process("models", "show", "house", "--json").stdout)
    assert info["signature"]["features"] == [f"f{i}" for i in range(8)]
    assert info["metrics"]["r2"] > 0.99 and set(info["metrics"]) == {"r2", "mae", "rmse"}
    assert info["tags"]["model_type"] == "linear-regression"
    run_in_process("train", "--data", str(path), "--target", "target", "--name", "house", "--model", "ridge")
    listed = json.loads(run_in_process("models", "list", "--json").stdout)
    assert listed[0]["name"] == "house" and listed[0]["versions"] == [1, 2]
    loaded = modelport.load_model("house:1")
    assert abs(loaded.predict(x[:1])[0] - y[0]) < 1


def test_same_seed_same_model(home: Path, regression_csv) -> None:
    path, x, _ = regression_csv
    for _ in range(2):
        run_in_process("train", "--data", str(path), "--target", "target", "--name", "rf", "--model", "random-forest", "--seed", "7")
    # (trees are summed in parallel, so only the last bits may differ)
    np.testing.assert_allclose(modelport.load_model("rf:1").predict(x), modelport.load_model("rf:2").predict(x), rtol=1e-12)


def test_classifiers_report_accuracy_and_f1(home: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(rng.normal(size=(150, 3)), columns=["a", "b", "c"])
    frame["label"] = np.where(frame.a + frame.b > 0, "spam", "ham")
    path = tmp_path / "cls.csv"
    frame.to_csv(path, index=False)
    for model in ("logistic-regression", "random-forest-classifier"):
        out = run_in_process("train", "--data", str(path), "--target", "label", "--name", "cls", "--model", model)
        assert "accuracy" in out.stdout and "f1" in out.stdout
    assert modelport.get_store().resolve("cls").signature["classes"] == ["ham", "spam"]


@pytest.mark.parametrize(("content", "target", "message"), [
    ("", "y", "is empty"),
    ("a,b,y\n", "y", "no rows of data"),
    ("a,b,y\n1,2,3\n4,5,6\n7,8,9\n", "price", "Target column 'price' not found in bad.csv; columns are: a, b, y"),
    ("a,city,y\n1,Paris,3\n4,Rome,6\n7,Oslo,9\n", "y", "Column 'city' is not numeric (line 2: 'Paris')"),
    ("a,b,y\n1,2,3\n4,,6\n7,8,9\n1,1,1\n", "y", "Column 'b' has missing values on line(s) 3"),
    ("a,b,y\n1,2,3\n4,5,\n7,8,9\n1,1,1\n", "y", "Target column 'y' has missing values on line(s) 3"),
    ("a,b,y\n1,2,x\n4,5,z\n7,8,9\n1,1,1\n", "y", "Target column 'y' is not numeric"),
    ("y\n1\n2\n3\n", "y", "no features"),
    ("a,y\n1,2\n", "y", "too few to split"),
])
def test_bad_csvs_get_clear_errors(home: Path, tmp_path: Path, content: str, target: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    out = run_in_process("train", "--data", str(path), "--target", target, "--name", "bad", check=False)
    assert out.returncode == 1
    assert message in " ".join(out.stderr.split()), out.stderr
    assert "Traceback" not in out.stderr


def test_missing_file_and_bad_options(home: Path, regression_csv) -> None:
    out = run_in_process("train", "--data", "/nonexistent.csv", "--target", "y", "--name", "x", check=False)
    assert out.returncode == 1 and "No such file" in out.stderr
    path, _, _ = regression_csv
    out = run_in_process("train", "--data", str(path), "--target", "target", "--name", "x", "--model", "magic", check=False)
    assert out.returncode == 1 and "Unknown model type 'magic'" in out.stderr
    out = run_in_process("train", "--data", str(path), "--target", "target", "--name", "Bad Name", check=False)
    assert out.returncode == 1 and "Invalid model name" in out.stderr


def test_models_cli_tag_untag_rm_export_import(home: Path, regression_csv, tmp_path: Path) -> None:
    path, _, _ = regression_csv
    for _ in range(2):
        run_in_process("train", "--data", str(path), "--target", "target", "--name", "m")
    run_in_process("models", "tag", "m:1", "production")
    assert json.loads(run_in_process("models", "show", "m@production", "--json").stdout)["version"] == 1
    assert "production" in run_in_process("models", "list").stdout
    run_in_process("models", "untag", "m", "production")
    out = run_in_process("models", "show", "m@production", check=False)
    assert out.returncode == 1 and "no alias 'production'" in out.stderr
    bundle = tmp_path / "m1.tar.gz"
    run_in_process("models", "export", "m:1", str(bundle))
    assert "Imported as copy:1" in run_in_process("models", "import", str(bundle), "--name", "copy").stdout
    run_in_process("models", "rm", "m:2")
    assert json.loads(run_in_process("models", "list", "--json").stdout)[1]["versions"] == [1]
    out = run_in_process("models", "rm", "m", check=False, input="n\n")
    assert out.returncode == 1 and "Nothing deleted" in out.stderr
    run_in_process("models", "rm", "m", "--yes")
    assert [m["name"] for m in json.loads(run_in_process("models", "list", "--json").stdout)] == ["copy"]


def test_import_command_detects_framework(home: Path, tmp_path: Path) -> None:
    import pickle

    from sklearn.linear_model import LinearRegression

    path = tmp_path / "legacy.pkl"
    path.write_bytes(pickle.dumps(LinearRegression().fit([[0, 1], [1, 0], [1, 1]], [1, 2, 3])))
    out = run_in_process("import", "legacy", str(path), check=False)
    assert out.returncode == 1 and "--trust-pickle" in out.stderr
    assert "Registered legacy:1 (sklearn, regression)" in run_in_process("import", "legacy", str(path), "--trust-pickle").stdout


@pytest.mark.parametrize("model", ["logistic-regression", "random-forest-classifier"])
def test_classifier_on_a_continuous_target_is_refused_before_fitting(home: Path, regression_csv, model: str) -> None:
    path, _, _ = regression_csv
    out = run_in_process("train", "--data", str(path), "--target", "target", "--name", "c", "--model", model, check=False)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert f"Target column 'target' holds continuous values (line 2: {float(pd.read_csv(path).target[0])})" in out.stderr, out.stderr
    assert "--model linear-regression, ridge, random-forest or gradient-boosting" in out.stderr
    assert "Fitting" not in out.stdout


def test_integer_labels_are_classes(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "ints.csv"
    path.write_text("a,y\n" + "".join(f"{i},{float(i % 2)}\n" for i in range(20)))
    out = run_in_process("train", "--data", str(path), "--target", "y", "--name", "c", "--model", "logistic-regression", check=False)
    assert out.returncode == 0, out.stderr
    assert modelport.get_store().resolve("c").signature["classes"] == [0.0, 1.0]


def test_invalid_name_is_refused_before_reading_or_fitting(home: Path, regression_csv) -> None:
    path, _, _ = regression_csv
    out = run_in_process("train", "--data", str(path), "--target", "target", "--name", "Bad Name", check=False)
    assert out.returncode == 1 and "Invalid model name 'Bad Name'" in out.stderr
    assert "Reading" not in out.stdout and "Fitting" not in out.stdout


def test_ctrl_c_during_training_says_interrupted_and_exits_130(home: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20_000, 10))
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(10)])
    frame["y"] = x.sum(axis=1)
    frame.to_csv(tmp_path / "big.csv", index=False)  # a forest of 100 trees on it takes seconds to fit
    proc = subprocess.Popen([sys.executable, "-m", "modelport", "train", "--data", str(tmp_path / "big.csv"), "--target",
                             "y", "--name", "big", "--model", "random-forest"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            if "Fitting" in line:
                proc.send_signal(signal.SIGINT)
                break
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert stderr.strip() == "Interrupted", stderr
    assert modelport.get_store().list_models() == []
