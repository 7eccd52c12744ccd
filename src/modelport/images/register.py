"""Registering image classifiers (import-time): an ONNX model + its preprocessing + its class labels.

A registered image classifier is framework ``onnx``, task ``image-classification``, with the files
``model.onnx`` and ``labels.txt``; ``extra`` records the preprocessing spec, the number of labels, whether
the model's scores are logits or probabilities, and its default adaptive batching. Everything is checked
at import time by running the model once on a preprocessed image, so a mismatch is an import error
with a message, not a server that answers 500.

Serving needs onnxruntime, Pillow and numpy only; torch is imported just to export the pretrained model.
"""

from __future__ import annotations

import io
import json
import math
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from modelport.errors import FrameworkError, ModelportError
from modelport.extras import require
from modelport.frameworks.base import IMAGE_CLASSIFICATION, versions_of
from modelport.images.classifier import LABELS_FILE, Preprocessor, check_labels, parse_labels
from modelport.images.decode import _RESAMPLING
from modelport.progress import Progress
from modelport.store import ModelStore, ModelVersion

__all__ = ["import_image_classifier", "parse_preprocess", "register_pretrained_mobilenet_v2"]

MODEL_FILE = "model.onnx"
# Measured with `python -m bench.images` (MobileNetV2, 2 cores, 2 workers, 32 uploaders): max 8 / 2 ms gave
# 124 images/s; max 4: 122, max 16: 120 with a longer p99, no wait: 120. On CPU, onnxruntime's cost per image is
# flat up to batch 8 and grows past 16 (cache), so bigger batches only add queueing.
DEFAULT_BATCHING = {"max_batch_size": 8, "max_latency_ms": 2.0}
_SPEC_KEYS = ("resize", "crop", "interpolation", "rescale", "mean", "std", "channels", "layout", "dtype")



class ImageModelError(FrameworkError):
    """An image classifier whose model, labels and preprocessing do not fit together."""


# -- preprocessing -----------------------------------------------------------------------------

def parse_preprocess(preprocess: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """'imagenet' (or None), a JSON object string or a dict -> a complete, checked spec.

    The keys given override torchvision's ImageNet recipe, so ``{"resize": 342, "crop": 299}`` is enough
    for an Inception-style model. ``mean``/``std`` are in the model's channel order.
    """
    from modelport.images.pretrained import IMAGENET_PREPROCESS

    if preprocess is None or preprocess == "imagenet":
        given: Mapping[str, Any] = {}
    elif isinstance(preprocess, str):
        try:
            given = json.loads(preprocess)
        except json.JSONDecodeError as e:
            raise ModelportError(f"--preprocess must be 'imagenet' or a JSON object: {e}") from None
        if not isinstance(given, dict):
            raise ModelportError("--preprocess must be 'imagenet' or a JSON object")
    else:
        given = preprocess
    unknown = sorted(set(given) - set(_SPEC_KEYS))
    if unknown:
        raise ModelportError(f"Unknown preprocessing key(s) {', '.join(unknown)}; known: {', '.join(_SPEC_KEYS)}")
    spec = {**IMAGENET_PREPROCESS, **given}
    for key in ("resize", "crop"):
        if type(spec[key]) is not int or spec[key] < 1:
            raise ModelportError(f"Preprocessing {key!r} must be a positive integer, got {spec[key]!r}")
    if spec["crop"] > spec["resize"]:
        raise ModelportError(f"Preprocessing crop {spec['crop']} is larger than resize {spec['resize']}")
    if spec["interpolation"] not in _RESAMPLING:
        raise ModelportError(f"Preprocessing interpolation must be one of {', '.join(_RESAMPLING)}")
    for key in ("mean", "std"):
        v = spec[key]
        if not isinstance(v, list | tuple) or len(v) != 3 or not all(_number(x) for x in v):
            raise ModelportError(f"Preprocessing {key!r} must be 3 numbers (one per channel), got {v!r}")
    if any(s == 0 for s in spec["std"]):
        raise ModelportError("Preprocessing 'std' cannot contain 0")
    if not _number(spec["rescale"]) or spec["rescale"] <= 0:
        raise ModelportError(f"Preprocessing 'rescale' must be a positive number, got {spec['rescale']!r}")
    if spec["channels"] not in ("RGB", "BGR"):
        raise ModelportError(f"Preprocessing 'channels' must be RGB or BGR, got {spec['channels']!r}")
    if spec["layout"] not in ("NCHW", "NHWC"):
        raise ModelportError(f"Preprocessing 'layout' must be NCHW or NHWC, got {spec['layout']!r}")
    if spec["dtype"] != "float32":
        raise ModelportError(f"Preprocessing 'dtype' must be float32, got {spec['dtype']!r}")
    return {**spec, "mean": [float(x) for x in spec["mean"]], "std": [float(x) for x in spec["std"]],
            "rescale": float(spec["rescale"])}


def _number(x: Any) -> bool:
    return type(x) in (int, float) and math.isfinite(x)


# -- import ------------------------------------------------------------------------------------

def import_image_classifier(name: str, model_file: str | Path | bytes, *, labels: str | Path | list[str] | None,
                            preprocess: str | Mapping[str, Any] | None = None, description: str = "",
                            store: ModelStore | None = None) -> ModelVersion:
    """Register an ONNX image classifier with its preprocessing and class labels, after checking that
    they fit: the model's input shape vs. the crop, its output size vs. the number of labels."""
    require("image", "Importing an image classifier")
    from modelport.frameworks.onnx import session as ort_session

    if isinstance(model_file, bytes):
        data = model_file
    else:
        path = Path(model_file)
        if not path.is_file():
            raise ModelportError(f"No such model file: {path}")
        if path.suffix.lower() != ".onnx":
            raise ModelportError(f"{path.name}: image classifiers are imported as ONNX (.onnx) files")
        data = path.read_bytes()
    if labels is None:
        raise ModelportError("An image classifier needs its class names: pass --labels FILE (one name per line)")
    if isinstance(labels, list):
        names = check_labels(labels)
    else:
        lpath = Path(labels)
        if not lpath.is_file():
            raise ModelportError(f"No such labels file: {lpath}")
        names = parse_labels(lpath.read_bytes(), lpath.name)
    spec = parse_preprocess(preprocess)
    sess = ort_session(data)
    batch_axis = _check_input(sess, spec)
    scores = _check_output(sess, spec, len(names))
    batching = DEFAULT_BATCHING if batch_axis else {"max_batch_size": 1, "max_latency_ms": 0.0}
    (inp,), out = sess.get_inputs(), sess.get_outputs()[0]
    signature = {
        "kind": "image",
        "inputs": [{"name": "image", "dtype": "bytes", "shape": [-1]}],
        "outputs": [{"name": "probabilities", "dtype": "float32", "shape": [-1, len(names)]},
                    {"name": "labels", "dtype": "string", "shape": [-1, -1]},
                    {"name": "confidences", "dtype": "float32", "shape": [-1, -1]}],
        "model": {"input": inp.name, "input_shape": _dims(inp.shape), "output": out.name, "output_shape": _dims(out.shape)},
    }
    extra = {"preprocess": spec, "labels": len(names), "scores": scores, "batch_axis": batch_axis, "batching": dict(batching)}
    files = {MODEL_FILE: data, LABELS_FILE: ("\n".join(names) + "\n").encode()}
    return (store or ModelStore()).save(name, files, framework="onnx", task=IMAGE_CLASSIFICATION, signature=signature,
                                        libraries=versions_of("onnxruntime", "numpy", "pillow"), extra=extra,
                                        description=description)


def _dims(shape: list[Any]) -> list[int]:
    return [d if isinstance(d, int) else -1 for d in shape]


def _check_input(sess: Any, spec: Mapping[str, Any]) -> bool:
    """The model takes one float image tensor of the preprocessed size; returns whether it batches."""
    inputs = sess.get_inputs()
    if len(inputs) != 1:
        raise ImageModelError(f"An image classifier takes one input tensor; this model has {len(inputs)} "
                              f"({', '.join(i.name for i in inputs)})")
    inp = inputs[0]
    if inp.type not in ("tensor(float)", "tensor(float16)", "tensor(double)"):
        raise ImageModelError(f"The model's input {inp.name!r} is {inp.type}; modelport feeds float images")
    crop, layout = spec["crop"], spec["layout"]
    want = [3, crop, crop] if layout == "NCHW" else [crop, crop, 3]
    if len(inp.shape) != 4:
        raise ImageModelError(f"The model's input {inp.name!r} has shape {inp.shape}; an image classifier takes "
                              f"{layout} [N, {', '.join(map(str, want))}]")
    batch, *dims = inp.shape
    if any(isinstance(d, int) and d != w for d, w in zip(dims, want, strict=True)):
        if layout == "NCHW" and dims[2] == 3:
            hint = ' It looks channels-last: add "layout": "NHWC" to --preprocess.'
        elif layout == "NHWC" and dims[0] == 3:
            hint = ' It looks channels-first: use "layout": "NCHW".'
        else:
            side = next((d for d in dims if isinstance(d, int) and d != 3), crop)
            hint = f' Preprocess to its size, e.g. --preprocess \'{{"resize": {round(side * 8 / 7)}, "crop": {side}}}\'.'
        raise ImageModelError(f"The model's input {inp.name!r} has shape {inp.shape} but the preprocessing makes "
                              f"{layout} [N, {', '.join(map(str, want))}] (crop {crop}).{hint}")
    if isinstance(batch, int) and batch != 1:
        raise ImageModelError(f"The model's input {inp.name!r} has a fixed batch size of {batch}; "
                              "export it with a dynamic (or 1) batch dimension")
    return not isinstance(batch, int)


def _check_output(sess: Any, spec: Mapping[str, Any], n_labels: int) -> str:
    """Run the model on two real-looking inputs: its scores must be one per label. -> 'logits' or 'probabilities'."""
    from PIL import Image

    rng = np.random.default_rng(0)
    pre, crop = Preprocessor(spec), spec["crop"]
    xs = []
    for img in (Image.new("RGB", (crop + 7, crop + 3), (128, 128, 128)),
                Image.fromarray(rng.integers(0, 256, (crop, crop + 11, 3), dtype=np.uint8))):
        buf = io.BytesIO()
        img.save(buf, "PNG")
        xs.append(pre(buf.getvalue()))  # the serving path itself, from encoded bytes
    inp = sess.get_inputs()[0]
    dtype = {"tensor(float16)": np.float16, "tensor(double)": np.float64}.get(inp.type, np.float32)
    outs = []
    for x in xs:  # one at a time: the model may have a fixed batch of 1
        try:
            outs.append(np.asarray(sess.run(None, {inp.name: x[None].astype(dtype)})[0]))
        except Exception as e:
            raise ImageModelError(f"The model failed on a preprocessed image: {type(e).__name__}: {e}") from None
    y = np.concatenate([o.reshape(1, -1) for o in outs]).astype(np.float64)
    if y.shape[1] != n_labels:
        raise ImageModelError(f"The model gives {y.shape[1]} scores per image but there are {n_labels} labels; "
                              f"the labels file must have one class name per model output, in output order")
    if not np.isfinite(y).all():
        raise ImageModelError("The model gives non-finite scores on a plain gray image")
    looks_like_probs = (y >= 0).all() and (y <= 1).all() and np.allclose(y.sum(1), 1, atol=1e-3)
    return "probabilities" if looks_like_probs else "logits"


# -- the tutorial's pretrained model -------------------------------------------------------------

def register_pretrained_mobilenet_v2(name: str = "mobilenet-v2", weights: str | Path | None = None,
                                     progress: Progress | None = None, store: ModelStore | None = None) -> ModelVersion:
    """Export torchvision's ImageNet MobileNetV2 to ONNX (needs torch) and register it with torchvision's
    preprocessing and the ImageNet-1k labels. Steps are reported through ``progress``."""
    from modelport.images.pretrained import mobilenet_v2 as mnv2

    say = progress or (lambda _msg: None)
    require("torch", "Exporting MobileNetV2 (only this step: serving never needs PyTorch)")
    last = [-1]

    def bytes_progress(done: int, total: int | None) -> None:
        step = done * 10 // total if total else done >> 23  # every 10 %, or every 8 MiB without a length
        if step != last[0]:
            last[0] = step
            say(f"Downloading weights: {done / 1e6:.1f} MB" + (f" of {total / 1e6:.1f} MB" if total else ""))

    say("Finding the weights (torchvision IMAGENET1K_V1)")
    path = mnv2.resolve_weights(weights, download=True, progress=bytes_progress)
    say(f"Weights verified (sha256 {mnv2.WEIGHTS_SHA256[:12]}…)")
    with tempfile.TemporaryDirectory(prefix="modelport-export-") as tmp:
        onnx_path = Path(tmp) / MODEL_FILE
        mnv2.export_onnx(path, onnx_path, progress=say)
        say(f"Registering {name} (ONNX, {onnx_path.stat().st_size / 1e6:.1f} MB, 1000 ImageNet classes)")
        return import_image_classifier(
            name, onnx_path, labels=mnv2.load_labels(), preprocess=dict(mnv2.IMAGENET_PREPROCESS),
            description="MobileNetV2, torchvision ImageNet-1k weights (IMAGENET1K_V1), exported to ONNX", store=store)
