"""What one request may cost an image model's worker: a bounded number of images and decoded pixels
(issue 10 item 2), and bounded decoding work per image (item 3). Real server, real MobileNetV2."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests import fixtures_images
from tests.fixtures_images import CAT_NAMES, encode, import_mobilenet, photo, photo_jpeg
from tests.helpers import Server, free_port

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
    cat = photo_jpeg("chelsea")  # 451x300: 135,300 pixels
    assert infer(server, v2_images([cat] * 7)).status_code == 200
    # A large JPEG counts in full although it is decoded at a reduced scale: its scans are decoded in full.
    big = encode(Image.new("RGB", (1200, 900)), "JPEG")
    assert infer(server, v2_images([big])).status_code == 413
    r = httpx.post(server.url + "/predict", files={"image": ("p.png", encode(Image.new("RGB", (1100, 1000)), "PNG"))},
                   timeout=30)
    assert r.status_code == 413 and "--max-request-pixels" in r.json()["error"]
    r = httpx.post(server.url + "/predict", files={"image": ("cat.jpg", photo_jpeg("chelsea"))}, timeout=30)
    assert r.status_code == 200 and r.json()["prediction"][0]["class"] in CAT_NAMES


def hostile_jpeg(side: int = 4096, repeats: int = 4000) -> bytes:
    """A real progressive JPEG from Pillow with one AC refinement scan repeated: 33 bytes each, but every
    scan makes the decoder walk all the image's blocks (before the scan limit: ~70 s of CPU)."""
    data = encode(Image.new("RGB", (side, side), (120, 130, 140)), "JPEG", progressive=True, quality=90)
    pos = 2
    while True:  # walk the segments to the first AC refinement scan (spectral start > 0, Ah > 0)
        marker, length = data[pos + 1], int.from_bytes(data[pos + 2:pos + 4], "big")
        end = pos + 2 + length
        if marker == 0xDA:
            while data[(end := data.index(b"\xff", end)) + 1] in (0, *range(0xD0, 0xD8)):
                end += 2
            components = data[pos + 4]
            ss, approx = data[pos + 5 + 2 * components], data[pos + 7 + 2 * components]
            if ss > 0 and approx >> 4:
                return data[:end] + data[pos:end] * repeats + data[end:]
        pos = end


@pytest.mark.torch
def test_a_jpeg_with_thousands_of_scans_is_refused_at_once_and_others_are_served(server) -> None:
    bomb = hostile_jpeg()
    assert len(bomb) < 300_000

    async def concurrently() -> tuple[list[httpx.Response], float]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            started = time.monotonic()
            bombs = [client.post("/predict", content=bomb, headers={"content-type": "image/jpeg"}) for _ in range(2)]
            v2 = client.post("/v2/models/mnv2/infer", json=v2_images([bomb]))
            normal = client.post("/predict", files={"image": ("cat.jpg", photo_jpeg("chelsea"))})
            responses = await asyncio.gather(*bombs, v2, normal)
            return list(responses), time.monotonic() - started

    responses, elapsed = asyncio.run(concurrently())
    assert elapsed < 3, elapsed
    *refused, normal = responses
    for r in refused:
        assert r.status_code == 400, r.text[:300]
        assert "JPEG has more than 29 scans; at most 29 are accepted for a 4096x4096 image" in r.json()["error"]
    assert normal.status_code == 200 and normal.json()["prediction"][0]["class"] in CAT_NAMES
    # A real progressive JPEG (10 scans) is served as before.
    progressive = encode(photo("chelsea"), "JPEG", progressive=True)
    r = httpx.post(server.url + "/predict", content=progressive, headers={"content-type": "image/jpeg"}, timeout=30)
    assert r.status_code == 200 and r.json()["prediction"][0]["class"] in CAT_NAMES
