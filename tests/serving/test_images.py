"""Image classifiers served by ``modelport serve`` over real HTTP: the tutorial's API, raw bodies, v2 BYTES,
every kind of bad upload, and concurrent uploads batched together."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image
from starlette.testclient import TestClient

from modelport.images.classifier import Preprocessor
from modelport.images.decode import preprocess_bytes
from modelport.images.pretrained import IMAGENET_PREPROCESS, load_labels
from modelport.images.register import parse_preprocess
from tests import fixtures_images
from tests.fixtures_images import CAT_NAMES, ESPRESSO, encode, import_mobilenet, photo, photo_jpeg, tiny_onnx
from tests.helpers import Server, free_port, run_in_process, wait_until

LABELS = load_labels()
MAX_BODY = 1024 * 1024  # the server below runs with --max-body-mb 1
mobilenet_onnx = fixtures_images.mobilenet_onnx  # the session-wide export, used as a fixture here


class Expected:
    """onnxruntime called directly on the same preprocessing: what the server must answer."""

    def __init__(self, onnx_path) -> None:
        self.session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])

    def probabilities(self, data: bytes) -> np.ndarray:
        (logits,) = self.session.run(None, {"input": preprocess_bytes(data, IMAGENET_PREPROCESS)[None]})
        e = np.exp(logits[0].astype(np.float64) - logits[0].max())
        return e / e.sum()

    def check(self, prediction: list[dict[str, Any]], data: bytes, k: int = 3) -> None:
        probs = self.probabilities(data)
        top = np.argsort(-probs)[:k]
        assert [p["class"] for p in prediction] == [LABELS[i] for i in top]
        np.testing.assert_allclose([p["confidence"] for p in prediction], probs[top], atol=1e-5)


@pytest.fixture(scope="module")
def served(mobilenet_onnx, tmp_path_factory) -> Iterator[tuple[Server, Expected]]:
    """MobileNetV2 imported with the CLI, served by 2 workers with a 1 MB body limit."""
    tmp = tmp_path_factory.mktemp("images")
    env = {"MODELPORT_HOME": str(tmp / "home")}
    import_mobilenet(mobilenet_onnx, env)
    port = free_port()
    server = Server(["serve", "mnv2", "--port", str(port), "--workers", "2", "--max-body-mb", "1"], port,
                    tmp / "server.log", env=env)
    try:
        yield server.wait_ready(), Expected(mobilenet_onnx[0])
    finally:
        server.stop()


def upload(url: str, image: bytes, filename: str = "photo.jpg", **kwargs: Any) -> httpx.Response:
    return httpx.post(url, files={"image": (filename, image, "application/octet-stream")}, timeout=30, **kwargs)


def still_serving(server: Server) -> None:
    r = upload(server.url + "/predict", photo_jpeg("chelsea"))
    assert r.status_code == 200 and r.json()["prediction"][0]["class"] in CAT_NAMES


# --- the tutorial's API -------------------------------------------------------------------------

@pytest.mark.torch
def test_cat_and_espresso_photos_match_onnxruntime(served) -> None:
    server, expected = served
    cat, coffee = photo_jpeg("chelsea"), photo_jpeg("coffee")
    r = upload(server.url + "/predict", cat)
    assert r.status_code == 200 and r.headers["x-model"] == "mnv2"
    body = r.json()
    assert list(body) == ["prediction"] and len(body["prediction"]) == 3
    assert set(body["prediction"][0]) == {"class", "confidence"}
    assert body["prediction"][0]["class"] in CAT_NAMES
    expected.check(body["prediction"], cat)

    r = upload(server.url + "/models/mnv2/predict", coffee)
    assert r.json()["prediction"][0]["class"] == LABELS[ESPRESSO] == "espresso"
    expected.check(r.json()["prediction"], coffee)


@pytest.mark.torch
def test_raw_bodies_and_top_k(served) -> None:
    server, expected = served
    cat = photo_jpeg("chelsea")
    r = httpx.post(server.url + "/predict?top_k=5", content=cat, headers={"content-type": "image/jpeg"})
    assert r.status_code == 200
    expected.check(r.json()["prediction"], cat, k=5)
    png = encode(photo("coffee"), "PNG")
    r = httpx.post(server.url + "/predict", content=png, headers={"content-type": "image/png"})
    expected.check(r.json()["prediction"], png)
    # curl --data-binary @photo.jpg without -H sends application/x-www-form-urlencoded: still an image.
    r = httpx.post(server.url + "/predict", content=cat, headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200 and r.json()["prediction"][0]["class"] in CAT_NAMES

    r = upload(server.url + "/predict", cat, data={"top_k": "1"})
    assert len(r.json()["prediction"]) == 1
    r = upload(server.url + "/predict", cat, data={"top_k": "2"}, params={"top_k": "7"})  # the form field wins
    assert len(r.json()["prediction"]) == 2
    r = upload(server.url + "/predict", cat, params={"top_k": "5000"})
    assert len(r.json()["prediction"]) == 1000  # at most every class
    for bad in ("0", "-1", "three", "2.5"):
        r = upload(server.url + "/predict", cat, params={"top_k": bad})
        assert r.status_code == 400 and r.json()["error"] == f"top_k must be a positive integer (at most 1000), got {bad!r}"


# --- bad uploads --------------------------------------------------------------------------------

def _multipart(field: str, data: bytes, filename: str | None = "upload.bin") -> dict[str, Any]:
    return {"files": {field: (filename, data, "application/octet-stream")}}


def _bomb() -> bytes:
    # 48 million pixels that compress to a few KB: refused from the header, before any pixel memory exists.
    return encode(Image.new("1", (8000, 6000)), "PNG")


def _noise_png(side: int) -> bytes:
    return encode(Image.fromarray(np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)), "PNG")


BAD_UPLOADS = {
    "no image field": (lambda: _multipart("file", photo_jpeg("chelsea")), 400,
                       "No image provided: send the image as the multipart file field 'image', "
                       "e.g. curl -F image=@photo.jpg (got fields: file)", True),
    "empty body": (lambda: {"content": b""}, 400, "No image provided", True),
    "image field is text": (lambda: {"data": {"image": "cat.jpg"}, "files": {"other": ("x", b"x")}}, 400,
                            "No image provided: the field 'image' must be a file upload", False),
    "json body": (lambda: {"json": {"image": "cat.jpg"}}, 400, "No image provided: send a multipart/form-data", False),
    "not an image": (lambda: _multipart("image", b"hello, this is not a picture\n" * 20), 400,
                     "Not an image (could not identify format; accepted: JPEG, PNG, GIF, WEBP, BMP, TIFF)", True),
    "zero bytes": (lambda: _multipart("image", b""), 400, "Empty file", True),
    "truncated jpeg": (lambda: _multipart("image", photo_jpeg("chelsea")[:9000]), 400, "Image is truncated or corrupt", True),
    "truncated raw png": (lambda: {"content": encode(photo("chelsea"), "PNG")[:5000],
                                   "headers": {"content-type": "image/png"}}, 400, "Image is truncated or corrupt", True),
    "decompression bomb": (lambda: _multipart("image", _bomb()), 400,
                           "Image is 8000x6000 pixels; the limit is 40000000 pixels", True),
    "body over the limit": (lambda: _multipart("image", _noise_png(700)), 413, f"the limit is {MAX_BODY} bytes", False),
    "two images": (lambda: {"files": [("image", ("a.jpg", b"1")), ("image", ("b.jpg", b"2"))]}, 400,
                   "Malformed multipart body: Too many files", False),
}


@pytest.mark.torch
@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_bad_uploads_get_a_clear_error_and_the_server_keeps_serving(served, case: str) -> None:
    server, _ = served
    build, status, message, exact = BAD_UPLOADS[case]
    r = httpx.post(server.url + "/predict", timeout=30, **build())
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error == message if exact else message in error
    still_serving(server)


def _animated_gif() -> bytes:
    cat, coffee = photo("chelsea"), photo("coffee").resize(photo("chelsea").size)
    return encode(cat, "GIF", save_all=True, append_images=[coffee], duration=100, loop=0)


def _exif_rotated(fmt: str) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": how phones store portrait shots
    return encode(photo("chelsea").transpose(Image.Transpose.ROTATE_90), fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {}))


def _sixteen_bit() -> bytes:
    gray = np.asarray(photo("chelsea").convert("L")).astype(np.uint16) * 257
    data = encode(Image.fromarray(gray), "PNG")
    assert Image.open(__import__("io").BytesIO(data)).mode == "I;16"
    return data


def _rgba() -> bytes:
    rgba = photo("chelsea").convert("RGBA")
    rgba.putalpha(255)
    return encode(rgba, "PNG")


# Uploads that are unusual but valid: each must be decoded correctly (same answer as the plain photo where the
# pixels are the same), never refused.
ODD_UPLOADS = {
    "animated gif (first frame)": (_animated_gif, None),
    "16-bit png": (_sixteen_bit, None),
    "grayscale jpeg": (lambda: encode(photo("chelsea").convert("L"), "JPEG", quality=95), None),
    "rgba png": (_rgba, lambda: encode(photo("chelsea"), "PNG")),
    "cmyk jpeg": (lambda: encode(photo("chelsea").convert("CMYK"), "JPEG", quality=95), None),
    "exif rotated png": (lambda: _exif_rotated("PNG"), lambda: encode(photo("chelsea"), "PNG")),
    "exif rotated jpeg": (lambda: _exif_rotated("JPEG"), None),
}


@pytest.mark.torch
@pytest.mark.parametrize("case", list(ODD_UPLOADS))
def test_unusual_images_are_handled_not_refused(served, case: str) -> None:
    server, expected = served
    build, same_as = ODD_UPLOADS[case]
    data = build()
    r = upload(server.url + "/predict", data)
    assert r.status_code == 200, r.text
    prediction = r.json()["prediction"]
    assert prediction[0]["class"] in CAT_NAMES  # the cat is still seen as a cat
    expected.check(prediction, same_as() if same_as else data)
    still_serving(server)


@pytest.mark.torch
def test_exif_rotation_is_applied(served) -> None:
    server, expected = served
    data = _exif_rotated("JPEG")
    ignored = np.asarray(Image.open(__import__("io").BytesIO(data)).convert("RGB"))
    assert ignored.shape[:2] == photo("chelsea").size  # stored sideways: width and height swapped
    prediction = upload(server.url + "/predict", data).json()["prediction"]
    upright = expected.probabilities(encode(photo("chelsea"), "JPEG", quality=95))
    assert prediction[0]["class"] == LABELS[int(np.argmax(upright))]
    assert abs(prediction[0]["confidence"] - upright.max()) < 0.05


# --- Open Inference Protocol v2 ---------------------------------------------------------------

@pytest.mark.torch
def test_v2_bytes_input_with_tritonclient(served) -> None:
    import tritonclient.http as triton

    server, expected = served
    client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    meta = client.get_model_metadata("mnv2")
    assert meta["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
    assert [(o["name"], o["datatype"]) for o in meta["outputs"]] == [
        ("probabilities", "FP32"), ("labels", "BYTES"), ("confidences", "FP32")]
    photos = [photo_jpeg("chelsea"), photo_jpeg("coffee")]
    inp = triton.InferInput("image", [2], "BYTES")
    inp.set_data_from_numpy(np.array(photos, dtype=object), binary_data=True)
    result = client.infer("mnv2", [inp], parameters={"top_k": 2})
    probs = result.as_numpy("probabilities")
    assert probs.shape == (2, 1000) and probs.dtype == np.float32
    for row, data in zip(probs, photos, strict=True):
        np.testing.assert_allclose(row, expected.probabilities(data), atol=1e-5)
    labels = result.as_numpy("labels")
    assert labels.shape == (2, 2) and labels[0, 0].decode() in CAT_NAMES and labels[1, 0] == b"espresso"
    np.testing.assert_allclose(result.as_numpy("confidences"), np.sort(probs, axis=1)[:, ::-1][:, :2], atol=1e-6)
    with pytest.raises(triton.InferenceServerException, match=r"Input 'image'\[0\]: Not an image"):
        bad = triton.InferInput("image", [1], "BYTES")
        bad.set_data_from_numpy(np.array([b"not an image"], dtype=object), binary_data=True)
        client.infer("mnv2", [bad])


@pytest.mark.torch
def test_v2_plain_json_with_base64(served) -> None:
    server, expected = served
    cat = photo_jpeg("chelsea")
    body = {"id": "cat-1", "inputs": [{"name": "image", "shape": [1, 1], "datatype": "BYTES",
                                       "data": [base64.b64encode(cat).decode()]}],
            "outputs": [{"name": "labels"}, {"name": "confidences"}]}
    r = httpx.post(server.url + "/v2/models/mnv2/infer", json=body, timeout=30)
    assert r.status_code == 200, r.text
    out = {o["name"]: o for o in r.json()["outputs"]}
    assert r.json()["id"] == "cat-1" and set(out) == {"labels", "confidences"}
    assert out["labels"]["shape"] == [1, 3] and out["labels"]["data"][0] in CAT_NAMES
    expected.check([{"class": c, "confidence": p} for c, p in zip(out["labels"]["data"], out["confidences"]["data"],
                                                                   strict=True)], cat)
    bad = [
        ({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["%%% not base64"]}]},
         "Input 'image'[0]: BYTES sent as JSON must be the base64 of an image file"),
        ({"inputs": [{"name": "image", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]},
         "Input 'image' must be BYTES: the encoded image files"),
        ({"inputs": [{"name": "image", "shape": [1, 2], "datatype": "BYTES", "data": ["aGk=", "aGk="]}]},
         "has shape [1, 2]; send [N] or [N, 1] images"),
        ({"inputs": [{"name": "a", "shape": [1], "datatype": "BYTES", "data": ["aGk="]},
                     {"name": "b", "shape": [1], "datatype": "BYTES", "data": ["aGk="]}]}, "takes one BYTES input"),
        ({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(cat[:5000]).decode()]}]},
         "Input 'image'[0]: Image is truncated or corrupt"),
    ]
    for request, message in bad:
        r = httpx.post(server.url + "/v2/models/mnv2/infer", json=request, timeout=30)
        assert r.status_code == 400 and message in r.json()["error"], r.text
    still_serving(server)


# --- concurrency, metrics, docs -----------------------------------------------------------------

def batch_stats(server: Server, model: str = "mnv2") -> tuple[float, float]:
    """(model calls, images) counted so far by the batch-size histogram."""
    text = httpx.get(server.url + "/metrics").text
    count = re.search(rf'modelport_batch_size_count\{{model="{model}",version="1"\}} ([0-9.e+]+)', text)
    total = re.search(rf'modelport_batch_size_sum\{{model="{model}",version="1"\}} ([0-9.e+]+)', text)
    assert count and total, text
    return float(count[1]), float(total[1])


def upload_burst(server: Server, n: int = 32) -> tuple[list[httpx.Response], float, float]:
    """``n`` concurrent uploads → (responses, model calls they took, images counted)."""
    photos = {"chelsea": photo_jpeg("chelsea"), "coffee": photo_jpeg("coffee")}
    names = ["chelsea", "coffee"] * (n // 2)

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, limits=httpx.Limits(max_connections=n), timeout=60) as client:
            return await asyncio.gather(*(client.post("/predict", files={"image": (f"{m}.jpg", photos[m])}) for m in names))

    before = settled_batch_stats(server)
    responses = asyncio.run(burst())
    assert all(r.status_code == 200 for r in responses)
    for r, name in zip(responses, names, strict=True):
        top = r.json()["prediction"][0]["class"]
        assert top in CAT_NAMES if name == "chelsea" else top == "espresso"
    # Each worker flushes its metrics every second: wait for this burst's images to be counted.
    after = wait_until(lambda: batch_stats(server), lambda a: a[1] - before[1] >= len(names), timeout=30,
                       what=lambda a: f"{a[1] - before[1]:.0f} of {len(names)} images counted")
    return responses, after[0] - before[0], after[1] - before[1]


def settled_batch_stats(server: Server) -> tuple[float, float]:
    """``batch_stats`` once earlier requests are all counted: the same over more than one flush interval."""
    readings = [batch_stats(server)]

    def next_reading() -> list[tuple[float, float]]:
        time.sleep(1.2)  # one metrics flush interval and a margin: the condition is two equal readings across it
        readings.append(batch_stats(server))
        return readings

    return wait_until(next_reading, lambda r: r[-1] == r[-2], timeout=30, interval=0)[-1]


@pytest.mark.torch
def test_concurrent_uploads_are_batched(served) -> None:
    server, _ = served
    _, calls, images = upload_burst(server)
    assert images == 32 and calls < 32  # several uploads shared a model call
    text = httpx.get(server.url + "/metrics").text
    assert 'modelport_batch_size_bucket{le="1.0",model="mnv2",version="1"}' in text
    (model,) = httpx.get(server.url + "/models").json()["models"]
    assert model["batching"] == {"max_batch_size": 8, "max_latency_ms": 2.0}  # the model's own default


def in_process(store, ref: str, batch=None, **app_options):
    """``ref`` served by the real app and prediction router in this process (no socket): (the app, its models)."""
    from modelport.serving.app import create_app
    from modelport.serving.runtime import ServeSpec, load_models

    models = load_models([ServeSpec.parse(ref, batch)], store=store)
    return create_app(models, **app_options), models


async def concurrently(app, requests: list[dict[str, Any]]) -> list[httpx.Response]:
    """POST /predict with each of ``requests`` (httpx's arguments) at once, in-process."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test", timeout=60) as client:
        return await asyncio.gather(*(client.post("/predict", **r) for r in requests))


@pytest.mark.torch
def test_max_batch_size_1_turns_batching_off(mobilenet_onnx, store) -> None:
    from modelport.serving.batching import BatchConfig

    import_mobilenet(mobilenet_onnx)
    app, models = in_process(store, "mnv2", BatchConfig(max_batch_size=1))  # serve mnv2 --max-batch-size 1
    (model,) = post_in_process(app, "/models", method="GET").json()["models"]
    assert model["batching"] == {"max_batch_size": 1, "max_latency_ms": 2.0}  # latency still the model's own
    photos = [photo_jpeg("chelsea"), photo_jpeg("coffee")] * 8
    responses = asyncio.run(concurrently(app, [{"files": {"image": ("p.jpg", data)}} for data in photos]))
    assert all(r.status_code == 200 for r in responses)
    assert [r.json()["prediction"][0]["class"] in CAT_NAMES for r in responses] == [True, False] * 8
    calls = models.default.metrics.batch_sizes  # counted here, not yet flushed to prometheus-client
    assert sum(calls.counts) == calls.total == 16  # one model call per upload
    models.close()


@pytest.mark.torch
def test_log_db_records_uploads_like_any_prediction(mobilenet_onnx, store, tmp_path: Path) -> None:
    from modelport.predlog.db import make_engine
    from modelport.predlog.queries import list_predictions

    import_mobilenet(mobilenet_onnx)
    db = f"sqlite:///{tmp_path / 'predictions.db'}"
    app, _ = in_process(store, "mnv2", log_db=db, spool_dir=str(tmp_path / "spool"))  # serve mnv2 --log-db DB
    image = photo_jpeg("coffee")
    with TestClient(app) as client:  # leaving it stops the app: its log writes every queued record
        good = client.post("/predict", content=image, headers={"content-type": "image/jpeg", "x-request-id": "raw"})
        form = client.post("/predict?top_k=1", files={"image": ("photo.jpg", image, "application/octet-stream")},
                           headers={"x-request-id": "form"})
        bad = client.post("/predict", files={"image": ("photo.jpg", b"not an image", "application/octet-stream")},
                          headers={"x-request-id": "bad"})
    assert (good.status_code, form.status_code, bad.status_code) == (200, 200, 400)
    rows = list_predictions(make_engine(db), model="mnv2")
    by_id = {r["request_id"]: r for r in rows}
    assert {k: r["status"] for k, r in by_id.items()} == {"raw": 200, "form": 200, "bad": 400}
    assert by_id["raw"]["inputs"] == "base64:" + base64.b64encode(image).decode()  # the upload itself, not lost
    assert b"filename=" in base64.b64decode(by_id["form"]["inputs"].removeprefix("base64:"))
    for key, reply in (("raw", good), ("form", form), ("bad", bad)):
        assert json.loads(by_id[key]["outputs"]) == reply.json()
    assert by_id["raw"]["version"] == "1" and by_id["raw"]["content_type"] == "image/jpeg"


@pytest.mark.torch
def test_openapi_and_model_listing(served) -> None:
    server, _ = served
    spec = httpx.get(server.url + "/openapi.json").json()
    content = spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    image = content["multipart/form-data"]["schema"]["properties"]["image"]
    assert (image["type"], image["format"]) == ("string", "binary")  # Swagger UI shows a file chooser
    assert {"image/jpeg", "image/png"} <= set(content)
    assert spec["paths"]["/predict"]["post"]["parameters"][0]["name"] == "top_k"
    assert "/models/mnv2/predict" in spec["paths"] and "/v2/models/mnv2/infer" in spec["paths"]
    json.dumps(spec)  # renders
    assert httpx.get(server.url + "/docs").status_code == 200
    (model,) = httpx.get(server.url + "/models").json()["models"]
    assert (model["name"], model["task"], model["framework"]) == ("mnv2", "image-classification", "onnx")


# --- a small model without torch: fixed batch of 1, channels-last BGR, softmax outputs ------------

def test_tiny_channels_last_model_without_batching(store, tmp_path) -> None:
    from modelport.serving.batching import BatchConfig

    model = tiny_onnx(tmp_path / "tiny.onnx", classes=3, batch=1, layout="NHWC", softmax=True)
    (tmp_path / "labels.txt").write_text("red\ngreen\nblue\n")
    spec = {"resize": 40, "crop": 32, "layout": "NHWC", "channels": "BGR"}
    run_in_process("import", "tiny", str(model), "--task", "image-classification", "--labels", str(tmp_path / "labels.txt"),
            "--preprocess", json.dumps(spec))
    # batching asked for (serve tiny --max-batch-size 8), but the model only takes 1 image a call
    app, models = in_process(store, "tiny", BatchConfig(max_batch_size=8))
    data = photo_jpeg("coffee")
    (probs,) = ort.InferenceSession(str(model)).run(None, {"image": Preprocessor(parse_preprocess(spec))(data)[None]})
    r = post_in_process(app, "/predict", content=data, headers={"content-type": "image/jpeg"})
    assert r.status_code == 200, r.text
    order = np.argsort(-probs[0])
    assert [p["class"] for p in r.json()["prediction"]] == [["red", "green", "blue"][i] for i in order]
    np.testing.assert_allclose([p["confidence"] for p in r.json()["prediction"]], probs[0][order], atol=1e-6)

    assert all(r.status_code == 200 for r in asyncio.run(concurrently(app, [{"content": data}] * 8)))
    calls = models.default.metrics.batch_sizes
    assert sum(calls.counts) == calls.total == 9  # each image its own call
    v2 = post_in_process(app, "/v2/models/tiny/infer", json={"inputs": [
        {"name": "image", "shape": [2], "datatype": "BYTES", "data": [base64.b64encode(data).decode()] * 2}]}).json()
    probs_out = next(o for o in v2["outputs"] if o["name"] == "probabilities")
    assert probs_out["shape"] == [2, 3]
    np.testing.assert_allclose(np.reshape(probs_out["data"], (2, 3)), np.vstack([probs[0]] * 2), atol=1e-6)
    models.close()


@pytest.mark.torch
def test_pretrained_command_registers_a_servable_model(home, serve) -> None:
    out = run_in_process("pretrained", "mobilenet-v2", "--name", "tutorial")
    text = " ".join(out.stdout.split())
    for step in ("Finding the weights", "Weights verified", "Exporting to ONNX", "agree on", "Registering tutorial",
                 "Registered tutorial:1 (onnx, image-classification)"):
        assert step in text
    server = serve("tutorial")  # one worker: the server process itself answers
    r = upload(server.url + "/predict", photo_jpeg("coffee"))
    assert r.json()["prediction"][0]["class"] == "espresso"
    maps = Path(f"/proc/{server.proc.pid}/maps").read_text()
    assert "onnxruntime" in maps and "libtorch" not in maps  # PyTorch exported the model; serving never loads it
    bad = run_in_process("pretrained", "resnet-50", check=False)
    assert bad.returncode == 1 and "Unknown pretrained model 'resnet-50'; available: mobilenet-v2" in bad.stderr
    missing = run_in_process("pretrained", "mobilenet-v2", "--weights", str(home / "nope.pth"), check=False)
    assert missing.returncode == 1 and "No weights file at" in missing.stderr and "Traceback" not in missing.stderr


# --- in process: the upload API's messages, on a small model ---------------------------------------

@pytest.fixture
def tiny_app(store, tmp_path: Path):
    """A tiny image classifier served in process (the real app and prediction router, no socket)."""
    from modelport.images.register import import_image_classifier
    from modelport.serving.app import create_app
    from modelport.serving.runtime import ServeSpec, load_models

    import_image_classifier("tiny", tiny_onnx(tmp_path / "tiny.onnx", classes=3), labels=["red", "green", "blue"],
                            preprocess={"resize": 40, "crop": 32}, store=store)
    return create_app(load_models([ServeSpec.parse("tiny")], store=store))


def post_in_process(app, path: str, method: str = "POST", **kwargs: Any) -> httpx.Response:
    async def call() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(call())


def test_an_upload_under_another_field_name_is_told_the_field_to_use(tiny_app) -> None:
    r = post_in_process(tiny_app, "/predict", files={"file": ("x.jpg", photo_jpeg("coffee"))}, data={"top_k": "2"})
    assert r.status_code == 400
    assert r.json()["error"] == ("No image provided: send the image as the multipart file field 'image', "
                                 "e.g. curl -F image=@photo.jpg (got fields: top_k, file)")
    r = post_in_process(tiny_app, "/predict", files={"image": ("x.jpg", photo_jpeg("coffee"))}, data={"top_k": "2"})
    assert r.status_code == 200 and len(r.json()["prediction"]) == 2
