"""ONNX models, run with onnxruntime."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from modelport.errors import FrameworkError
from modelport.frameworks.base import TENSOR, Packed, Predictor, versions_of

FILE_NAME = "model.onnx"

# onnxruntime's element type names → numpy dtype names
_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int16)": "int16", "tensor(int8)": "int8",
    "tensor(uint8)": "uint8", "tensor(uint16)": "uint16", "tensor(uint32)": "uint32", "tensor(uint64)": "uint64",
    "tensor(bool)": "bool", "tensor(string)": "string",
}


def session(data: bytes) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    # Each server worker is its own process: give each a share of the cores, not all of them.
    threads = int(os.environ.get("MODELPORT_THREADS_PER_WORKER", "0"))
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # errors only: converted classifiers' label shapes would warn on every call
    if threads != 1:
        # Idle pool threads would spin on the cores that decode the next requests' inputs.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise FrameworkError(f"onnxruntime cannot load this model: {e}") from None


def _tensors(args: list[Any]) -> list[dict[str, Any]]:
    return [
        {"name": a.name, "dtype": _ORT_TYPES.get(a.type, a.type), "shape": [d if isinstance(d, int) else -1 for d in a.shape]}
        for a in args
    ]


_NUMERIC = {"float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8", "uint16", "uint32", "uint64"}


def tensor_signature(sess: Any, feature_names: list[str] | None = None) -> dict[str, Any]:
    """Named tensors for v2; plus ``features`` when the model is tabular in shape, so /predict serves it too."""
    sig: dict[str, Any] = {"kind": "tensor", "inputs": _tensors(sess.get_inputs()), "outputs": _tensors(sess.get_outputs())}
    n = tabular_width(sig)
    if n is not None:
        if feature_names is not None and len(feature_names) != n:
            raise FrameworkError(f"{len(feature_names)} feature names given; the model's input has {n} columns")
        if feature_names is not None and (len(set(feature_names)) != n or not all(feature_names)):
            raise FrameworkError("Feature names must be distinct and non-empty")
        sig["features"] = [str(f) for f in feature_names] if feature_names is not None else [f"f{i}" for i in range(n)]
    elif feature_names is not None:
        raise FrameworkError("Feature names apply only to a model with one numeric input of shape [batch, n] "
                             "and one numeric output")
    return sig


def tabular_width(sig: dict[str, Any]) -> int | None:
    """n when the model takes one numeric [batch, n] input and gives one numeric output: a table's rows."""
    ins, outs = sig["inputs"], sig["outputs"]
    if len(ins) != 1 or len(outs) != 1 or ins[0]["dtype"] not in _NUMERIC or outs[0]["dtype"] not in _NUMERIC:
        return None
    shape = ins[0]["shape"]
    return shape[1] if len(shape) == 2 and shape[1] > 0 else None


class OnnxPredictor(Predictor):
    def __init__(self, sess: Any, tabular: bool = False) -> None:
        self.session = sess
        self._input = sess.get_inputs()[0].name
        self._dtype = _ORT_TYPES.get(sess.get_inputs()[0].type, "float32")
        self._tabular = tabular

    def predict(self, x: np.ndarray) -> np.ndarray:
        y = self.session.run(None, {self._input: x.astype(self._dtype, copy=False)})[0]
        # A regressor converted to ONNX answers [batch, 1]: one number per row, like any tabular model.
        return y[:, 0] if self._tabular and y.ndim == 2 and y.shape[1] == 1 else y

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, inputs), strict=True))


class TabularOnnxPredictor(Predictor):
    """A scikit-learn, XGBoost or LightGBM model converted to ONNX (frameworks.convert), serving the tabular
    signature of the model it came from: rows in, predictions (and a classifier's labels and probabilities) out.
    A converted classifier gives two outputs, labels then probabilities. ``extra["onnx_labels"]`` says how its
    labels read: "values" (the label output), or "argmax": the first most probable of the signature's classes,
    which is how scikit-learn's trees and forests and modelport's boosters choose (the ONNX label output breaks
    ties, e.g. 0.5/0.5 in a forest of 10 trees, the other way; a booster file keeps no class values either)."""

    def __init__(self, sess: Any, signature: dict[str, Any], extra: dict[str, Any]) -> None:
        self.session = sess
        self._input = sess.get_inputs()[0].name
        self._dtype = _ORT_TYPES.get(sess.get_inputs()[0].type, "float32")
        self._outputs = [o.name for o in sess.get_outputs()]
        self.classes = signature.get("classes")
        self._argmax = extra.get("onnx_labels") == "argmax"
        self._probabilities = self.classes is not None and extra.get("onnx_probabilities", True) and len(self._outputs) > 1
        if self._dtype == "float32":  # the converted model computes in float32: larger inputs would overflow
            self.input_limit = float(np.finfo(np.float32).max)

    def _run(self, x: np.ndarray, output: int) -> np.ndarray:
        return self.session.run([self._outputs[output]], {self._input: x.astype(self._dtype, copy=False)})[0]

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.classes is None:
            return self._run(x, 0).reshape(len(x)).astype(np.float64, copy=False)  # [batch, 1] → one number per row
        if self._argmax:
            return np.asarray(self.classes)[self._run(x, 1).argmax(axis=1)]
        return self._run(x, 0).reshape(len(x))

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        if not self._probabilities:  # as the native model: a RidgeClassifier's scores are not probabilities
            raise FrameworkError("This model gives no class probabilities")
        return self._run(x, 1).astype(np.float64, copy=False)


class OnnxAdapter:
    name = "onnx"
    module = "onnxruntime"
    requirements = ("onnxruntime", "numpy")

    def accepts(self, obj: Any) -> bool:
        return type(obj).__name__ == "ModelProto" and type(obj).__module__.startswith("onnx")

    def pack(self, obj: Any, *, feature_names: list[str] | None = None,
             input_example: Any = None) -> Packed:
        return self._pack_bytes(obj.SerializeToString(), feature_names)

    def accepts_file(self, path: Path, head: bytes) -> bool:
        return path.suffix == ".onnx"

    def pack_file(self, path: Path, feature_names: list[str] | None = None) -> Packed:
        return self._pack_bytes(path.read_bytes(), feature_names)

    def _pack_bytes(self, data: bytes, feature_names: list[str] | None = None) -> Packed:
        sess = session(data)
        return Packed(files={FILE_NAME: data}, task=TENSOR, signature=tensor_signature(sess, feature_names),
                      libraries=versions_of("onnxruntime", "numpy"))

    def load(self, files: dict[str, bytes], signature: dict[str, Any], extra: dict[str, Any]) -> Predictor:
        if signature.get("kind") == "tabular":  # converted from another framework's tabular model
            return TabularOnnxPredictor(session(files[FILE_NAME]), signature, extra)
        return OnnxPredictor(session(files[FILE_NAME]), tabular="features" in signature)
