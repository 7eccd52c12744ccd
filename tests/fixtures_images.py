"""Shared image-model fixtures: import them into a test module (``from tests.fixtures_images import ...``).

``mobilenet_onnx`` exports the real MobileNetV2 once per session (needs torch, ~3 s); ``tiny_onnx`` builds small
ONNX image classifiers with the onnx helper API (no torch) for validation and edge-case tests.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

from modelport.images.pretrained import load_labels
from tests.helpers import run_in_process

CATS = range(281, 286)  # tabby, tiger cat, Persian cat, Siamese cat, Egyptian cat
CAT_NAMES = {load_labels()[i] for i in CATS}
ESPRESSO = 967


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def photo(name: str) -> Image.Image:
    """A real photograph shipped with scikit-image (chelsea: a cat, coffee: an espresso cup, ...)."""
    return Image.fromarray(getattr(skimage.data, name)())


def photo_jpeg(name: str, quality: int = 90) -> bytes:
    return encode(photo(name), "JPEG", quality=quality)


@pytest.fixture(scope="session")
def mobilenet_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(MobileNetV2 exported to ONNX with torchvision's ImageNet weights, its labels file)."""
    from modelport.images.pretrained import mobilenet_v2 as mnv2

    root = tmp_path_factory.mktemp("mobilenet")
    onnx_path, labels = root / "mobilenet_v2.onnx", root / "labels.txt"
    mnv2.export_onnx(mnv2.resolve_weights(), onnx_path)
    labels.write_text("\n".join(mnv2.load_labels()) + "\n")
    return onnx_path, labels


def import_mobilenet(mobilenet_onnx: tuple[Path, Path], env: dict[str, str] | None = None) -> None:
    """Register the exported MobileNetV2 as ``mnv2`` with the CLI (in this process), as a user would."""
    onnx_path, labels = mobilenet_onnx
    run_in_process("import", "mnv2", str(onnx_path), "--task", "image-classification", "--labels", str(labels),
            "--preprocess", "imagenet", env=env)


def tiny_onnx(path: Path, *, classes: int = 4, size: int | str = 32, batch: int | str = "N", layout: str = "NCHW",
              softmax: bool = False, seed: int = 0) -> Path:
    """A small image classifier: per-channel mean -> dense layer -> ``classes`` scores (softmaxed if asked)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    shape = [batch, 3, size, size] if layout == "NCHW" else [batch, size, size, 3]
    axes = [2, 3] if layout == "NCHW" else [1, 2]
    weight = numpy_helper.from_array(rng.normal(size=(3, classes)).astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.normal(size=classes).astype(np.float32), "b")
    axes_init = numpy_helper.from_array(np.array(axes, np.int64), "axes")
    nodes = [helper.make_node("ReduceMean", ["image", "axes"], ["pooled"], keepdims=0),
             helper.make_node("Gemm", ["pooled", "w", "b"], ["logits" if softmax else "scores"])]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["scores"], axis=1))
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, classes])],
                              [weight, bias, axes_init])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path
