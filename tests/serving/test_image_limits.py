"""What one request may cost an image model's worker: a bounded number of images and decoded pixels
(issue 10 item 2), and bounded decoding work per image (item 3). Real server, real MobileNetV2."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests import fixtures_images
from tests.fixtures_images import encode, photo_jpeg
from tests.helpers import Server, free_port
from tests.serving.test_images import CAT_NAMES, import_mobilenet

mobilenet_onnx = fixtures_images.mobilenet_onnx
REQUEST_PIXELS = 1_000_000  # the server below runs with --max-request-pixels 1000000


@pytest.fixture(scope="module")
def server(mobilenet_onnx, tmp_path_factory) -> Iterator[Server]:
    """MobileNetV2 served by one worker (so the process we start is the one that decodes), default image cap."""
    tmp = tmp_path_factory.mktemp("limits")
    env = {"MODELPORT_HOME": str(tmp / "home")}
    import_mobilenet(mobilenet_onnx, env)
    port = free_port()
    srv = Server(["serve", "mnv2", "--port", str(port), "--workers", "1", "--max-request-pixels", str(REQUEST_PIXELS)],
                 port, tmp / "server.log", env=env)
    try:
        yield srv.wait_ready()
    finally:
        srv.stop()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def v2_images(images: list[bytes]) -> dict[str, Any]:
    data = [base64.b64encode(b).decode() for b in images]
    return {"inputs": [{"name": "image", "shape": [len(data)], "datatype": "BYTES", "data": data}]}


def infer(server: Server, body: dict[str, Any], timeout: float = 60) -> httpx.Response:
    return httpx.post(server.url + "/v2/models/mnv2/infer", json=body, timeout=timeout)


@pytest.mark.torch
def test_too_many_images_are_refused_quickly_without_memory(server) -> None:
    tiny = encode(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG")
    infer(server, v2_images([tiny]))  # warm up: the first model call allocates onnxruntime's arena
    before = rss_bytes(server.proc.pid)
    started = time.monotonic()
    r = infer(server, v2_images([tiny] * 1500), timeout=30)
    elapsed = time.monotonic() - started
    assert r.status_code == 413, r.text[:300]
    assert r.json()["error"] == ("Input 'image' has 1500 images; the limit is 64 per request "
                                 "(modelport serve --max-images N raises it)")
    assert elapsed < 2, elapsed
    # Before the cap, this request took a worker from ~0.3 GB to several GB and kept it.
    assert rss_bytes(server.proc.pid) - before < 50 * 1024 * 1024

    r = infer(server, v2_images([tiny] * 64))  # at the cap: answered
    assert r.status_code == 200, r.text[:300]
    (probs,) = [o for o in r.json()["outputs"] if o["name"] == "probabilities"]
    assert probs["shape"] == [64, 1000]
    (model,) = httpx.get(server.url + "/models").json()["models"]
    assert model["image_limits"] == {"max_images": 64, "max_request_pixels": REQUEST_PIXELS}


@pytest.mark.torch
def test_decoded_pixels_per_request_are_bounded(server) -> None:
    png = encode(Image.new("RGB", (800, 800), (10, 120, 30)), "PNG")  # 640,000 pixels each
    r = infer(server, v2_images([png, png]))
    assert r.status_code == 413, r.text[:300]
    assert r.json()["error"] == ("The images of this request have more than 1000000 pixels in all; the limit is "
                                 "1000000 (modelport serve --max-request-pixels N raises it)")
    assert infer(server, v2_images([png])).status_code == 200
    # A large JPEG is decoded at a reduced scale (draft): what counts is the pixels actually decoded.
    big = photo_jpeg("chelsea")  # 451x300 decoded at full size: 135,300 pixels
    assert infer(server, v2_images([big] * 7)).status_code == 200
    r = httpx.post(server.url + "/predict", files={"image": ("p.png", encode(Image.new("RGB", (1100, 1000)), "PNG"))},
                   timeout=30)
    assert r.status_code == 413 and "--max-request-pixels" in r.json()["error"]
    r = httpx.post(server.url + "/predict", files={"image": ("cat.jpg", photo_jpeg("chelsea"))}, timeout=30)
    assert r.status_code == 200 and r.json()["prediction"][0]["class"] in CAT_NAMES

