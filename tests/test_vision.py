"""Registering image classifiers (modelport.images.register, .classifier): what is stored, and every mismatch refused clearly."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from modelport.errors import FrameworkError, ModelportError
from modelport.images.classifier import Preprocessor, parse_labels, read_labels
from modelport.images.decode import preprocess_bytes
from modelport.images.pretrained import IMAGENET_PREPROCESS
from modelport.images.register import DEFAULT_BATCHING, import_image_classifier, parse_preprocess
from tests.fixtures_images import encode, photo, photo_jpeg, tiny_onnx
from tests.helpers import run_in_process

SMALL = {"resize": 36, "crop": 32}


def labels_file(tmp_path: Path, n: int, name: str = "labels.txt") -> Path:
    path = tmp_path / name
    path.write_text("".join(f"class {i}\n" for i in range(n)))
    return path


def test_import_stores_model_labels_preprocessing_and_batching(store, tmp_path):
    model = tiny_onnx(tmp_path / "m.onnx", classes=4)
    mv = import_image_classifier("tiny", model, labels=labels_file(tmp_path, 4), preprocess=json.dumps(SMALL),
                                 description="four classes", store=store)
    assert (mv.framework, mv.task, sorted(mv.files)) == ("onnx", "image-classification", ["labels.txt", "model.onnx"])
    assert mv.extra["preprocess"] == {**parse_preprocess(None), **SMALL}
    assert mv.extra["labels"] == 4 and mv.extra["scores"] == "logits" and mv.extra["batch_axis"] is True
    assert mv.extra["batching"] == DEFAULT_BATCHING
    assert mv.signature["inputs"] == [{"name": "image", "dtype": "bytes", "shape": [-1]}]
    assert mv.signature["model"]["input_shape"] == [-1, 3, 32, 32]
    assert set(mv.libraries) == {"onnxruntime", "numpy", "pillow"}
    assert read_labels(mv, store.read_files(mv)) == [f"class {i}" for i in range(4)]


def test_softmax_output_and_fixed_batch_of_one_are_recorded(store, tmp_path):
    model = tiny_onnx(tmp_path / "m.onnx", classes=3, batch=1, softmax=True)
    mv = import_image_classifier("tiny", model, labels=["a", "b", "c"], preprocess=SMALL, store=store)
    assert mv.extra["scores"] == "probabilities"
    assert mv.extra["batch_axis"] is False and mv.extra["batching"]["max_batch_size"] == 1


@pytest.mark.parametrize(("kwargs", "n_labels", "message"), [
    ({"classes": 10}, 9, "gives 10 scores per image but there are 9 labels"),
    ({"size": 48}, 4, "has shape ['N', 3, 48, 48] but the preprocessing makes NCHW [N, 3, 32, 32] (crop 32). "
                      'Preprocess to its size, e.g. --preprocess \'{"resize": 55, "crop": 48}\''),
    ({"layout": "NHWC"}, 4, 'It looks channels-last: add "layout": "NHWC" to --preprocess'),
    ({"batch": 4}, 4, "fixed batch size of 4"),
])
def test_model_that_does_not_fit_is_refused(store, tmp_path, kwargs, n_labels, message):
    model = tiny_onnx(tmp_path / "m.onnx", **kwargs)
    with pytest.raises(FrameworkError) as e:
        import_image_classifier("tiny", model, labels=labels_file(tmp_path, n_labels), preprocess=SMALL, store=store)
    assert message in str(e.value)
    assert store.list_models() == []


def test_model_file_problems(store, tmp_path):
    labels = labels_file(tmp_path, 4)
    with pytest.raises(ModelportError, match="No such model file"):
        import_image_classifier("x", tmp_path / "missing.onnx", labels=labels, store=store)
    (tmp_path / "model.pt").write_bytes(b"x")
    with pytest.raises(ModelportError, match="imported as ONNX"):
        import_image_classifier("x", tmp_path / "model.pt", labels=labels, store=store)
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(FrameworkError, match="onnxruntime cannot load this model"):
        import_image_classifier("x", tmp_path / "junk.onnx", labels=labels, store=store)
    model = tiny_onnx(tmp_path / "m.onnx")
    with pytest.raises(ModelportError, match="needs its class names: pass --labels"):
        import_image_classifier("x", model, labels=None, store=store)
    with pytest.raises(ModelportError, match="No such labels file"):
        import_image_classifier("x", model, labels=tmp_path / "nope.txt", store=store)


@pytest.mark.parametrize(("preprocess", "message"), [
    ("{not json", "must be 'imagenet' or a JSON object"),
    ("[224]", "must be 'imagenet' or a JSON object"),
    ('{"size": 224}', "Unknown preprocessing key(s) size"),
    ('{"resize": 200, "crop": 224}', "crop 224 is larger than resize 200"),
    ('{"crop": 0}', "'crop' must be a positive integer"),
    ('{"resize": 256.5}', "'resize' must be a positive integer"),
    ('{"std": [0.2, 0, 0.2]}', "'std' cannot contain 0"),
    ('{"mean": [0.5, 0.5]}', "'mean' must be 3 numbers"),
    ('{"channels": "RGBA"}', "'channels' must be RGB or BGR"),
    ('{"layout": "CHW"}', "'layout' must be NCHW or NHWC"),
    ('{"interpolation": "area"}', "interpolation must be one of nearest, bilinear, bicubic, lanczos"),
    ('{"rescale": -1}', "'rescale' must be a positive number"),
])
def test_bad_preprocessing_is_refused(preprocess, message):
    with pytest.raises(ModelportError) as e:
        parse_preprocess(preprocess)
    assert message in str(e.value)


def test_preprocessing_defaults_to_imagenet_and_json_overrides_it():
    assert parse_preprocess("imagenet") == parse_preprocess(None)
    assert parse_preprocess("imagenet")["mean"] == list(IMAGENET_PREPROCESS["mean"])
    spec = parse_preprocess('{"resize": 342, "crop": 299, "interpolation": "bicubic"}')
    assert (spec["resize"], spec["crop"], spec["interpolation"], spec["std"]) == (342, 299, "bicubic",
                                                                                   list(IMAGENET_PREPROCESS["std"]))


def test_labels_formats():
    assert parse_labels(b"cat\r\ndog\n\n") == ["cat", "dog"]
    assert parse_labels(b'["cat", "dog"]') == ["cat", "dog"]
    assert parse_labels(b'{"1": "dog", "0": "cat"}') == ["cat", "dog"]
    assert parse_labels(b'{"0": ["n02123045", "tabby"], "1": ["n02123159", "tiger_cat"]}') == ["tabby", "tiger_cat"]
    for data, message in [(b"", "has no labels"), (b"cat\n\ndog\n", "label 1 (line 2) is empty"),
                          (b'{"0": "a", "2": "b"}', "without gaps"), (b"[1, 2]", "list of strings"),
                          (b"\xff\xfe\x00", "not UTF-8")]:
        with pytest.raises(ModelportError, match=re.escape(message)):
            parse_labels(data)


def test_bgr_and_nhwc_preprocessing_reorder_the_rgb_tensor():
    data = photo_jpeg("chelsea")
    spec = parse_preprocess(None)
    rgb = preprocess_bytes(data, spec)
    bgr_spec = {**spec, "channels": "BGR", "mean": spec["mean"][::-1], "std": spec["std"][::-1]}
    np.testing.assert_array_equal(Preprocessor(bgr_spec)(data), rgb[::-1])
    nhwc = Preprocessor({**spec, "layout": "NHWC"})(data)
    assert nhwc.shape == (224, 224, 3) and nhwc.flags.c_contiguous
    np.testing.assert_array_equal(nhwc, rgb.transpose(1, 2, 0))


def test_nhwc_bgr_model_imports_and_runs_on_its_layout(store, tmp_path):
    model = tiny_onnx(tmp_path / "m.onnx", layout="NHWC", classes=4)
    spec = {**SMALL, "layout": "NHWC", "channels": "BGR"}
    mv = import_image_classifier("tiny", model, labels=labels_file(tmp_path, 4), preprocess=spec, store=store)
    x = Preprocessor(mv.extra["preprocess"])(encode(photo("coffee"), "PNG"))
    (out,) = ort.InferenceSession(str(model)).run(None, {"image": x[None]})
    assert out.shape == (1, 4)


def test_cli_import_reports_a_mismatch_without_a_traceback(home, tmp_path):
    model = tiny_onnx(tmp_path / "m.onnx", classes=5)
    out = run_in_process("import", "tiny", str(model), "--task", "image-classification", "--labels",
                         str(labels_file(tmp_path, 4)), "--preprocess", json.dumps(SMALL), check=False)
    assert out.returncode == 1 and "gives 5 scores per image but there are 4 labels" in " ".join(out.stderr.split())
    assert "Traceback" not in out.stderr
    ok = run_in_process("import", "tiny", str(model), "--task", "image-classification", "--labels",
                        str(labels_file(tmp_path, 5)), "--preprocess", json.dumps(SMALL))
    assert "Registered tiny:1 (onnx, image-classification)" in ok.stdout


def test_the_image_package_imports_neither_the_server_nor_torch():
    """modelport.images is the HTTP-free core of image models: serving/ builds on it, never the reverse, and
    only exporting the pretrained model (inside the function) imports torch."""
    code = ("import sys, modelport.images.classifier, modelport.images.decode, modelport.images.register, "
            "modelport.images.pretrained; "
            "loaded = [m for m in sys.modules if m.startswith('modelport.serving') or m.split('.')[0] == 'torch']; "
            "assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], check=True)
