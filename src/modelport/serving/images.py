"""Image classification endpoints: ``/predict`` uploads (multipart field ``image`` or a raw image body) and
Open Inference Protocol v2 requests with a BYTES input of encoded images.

What one request may cost is bounded before any work is done (``serving.limits``): at most ``max_images``
images (413 beyond), and at most ``max_request_pixels`` decoded pixels for all of them together (413).

Per image: parse the upload on the event loop (cheap: ~1 ms of CPU for a 400 KB multipart body), decode +
preprocess in a thread pool (Pillow and numpy release the GIL, so decoding overlaps the model call running in
the batcher's thread), then run the model through the adaptive batcher, so images decoded at about the same time
share one onnxruntime call.

The pool has one thread per core the worker may use (``MODELPORT_THREADS_PER_WORKER``, set by ``serve`` to
cores / workers; ``MODELPORT_DECODE_THREADS`` overrides it). With the default of one worker per core, every
worker then has one decoding and one onnxruntime thread: measured best (``bench/images.py``), as more threads
per core only add switching.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import orjson
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.types import Scope

from modelport.errors import InvalidInputError, LimitExceededError, ModelFailedError
from modelport.images.classifier import Preprocessor
from modelport.images.decode import ImageInputError, ImageLimitError, PixelBudget
from modelport.serving.http import NO_IMAGE, Reply
from modelport.serving.runtime import ServedModel

HOW_TO_SEND = ("send a multipart/form-data upload with the file in the field 'image', "
               "or the image itself as the body with Content-Type image/jpeg or image/png")
DEFAULT_TOP_K = 3
_OPTIONS = {"max_images": "--max-images", "max_request_pixels": "--max-request-pixels"}  # serve's option per limit

_pool: ThreadPoolExecutor | None = None
_classifiers: weakref.WeakKeyDictionary[ServedModel, Classifier] = weakref.WeakKeyDictionary()


def decode_pool() -> ThreadPoolExecutor:
    """This process's decoding threads: one per core it may use (serve sets cores / workers)."""
    global _pool
    if _pool is None:
        n = int(os.environ.get("MODELPORT_DECODE_THREADS") or os.environ.get("MODELPORT_THREADS_PER_WORKER")
                or os.cpu_count() or 1)
        _pool = ThreadPoolExecutor(max_workers=max(1, n), thread_name_prefix="modelport-decode")
    return _pool


class Classifier:
    """What serving one image model needs, prepared once: labels, preprocessing, how to read its scores."""

    def __init__(self, model: ServedModel) -> None:
        if model.labels is None:
            raise ModelFailedError(f"Model {model.name!r} was loaded without its labels")
        extra = model.info.extra
        self.labels = np.array(model.labels, dtype=object)
        self.preprocess = Preprocessor(extra["preprocess"])
        self.softmax = extra.get("scores", "logits") == "logits"
        # A model exported with a fixed batch of 1 gets one call per image whatever the batching knobs say.
        self.batches = bool(extra.get("batch_axis", True)) and model.batcher is not None

    @classmethod
    def of(cls, model: ServedModel) -> Classifier:
        clf = _classifiers.get(model)
        if clf is None:
            clf = _classifiers[model] = cls(model)
        return clf

    async def decode(self, data: bytes, budget: PixelBudget, where: str = "") -> np.ndarray:
        """One image -> its model input. A failure closes ``budget``: the request's other images are not decoded."""
        try:
            return await asyncio.get_running_loop().run_in_executor(decode_pool(), self.preprocess, data, budget)
        except ImageLimitError as e:
            raise limit_error(str(e), e.setting) from None
        except ImageInputError as e:
            budget.close()
            raise InvalidInputError(f"{where}{e}") from None
        except MemoryError:
            budget.close()
            raise LimitExceededError(f"{where}Image is too large to decode") from None

    async def probabilities(self, model: ServedModel, x: np.ndarray) -> np.ndarray:
        """[N, ...] model inputs -> [N, classes] float64 probabilities."""
        if self.batches:
            scores = await model.predict(x)
        else:
            model.metrics.add_rows(len(x))
            loop = asyncio.get_running_loop()
            parts = []
            for row in x:
                model.metrics.observe_batch(1)
                try:
                    parts.append(await loop.run_in_executor(model.executor, model.predictor.predict, row[None]))
                except Exception as e:
                    raise model.failed(e, "predict") from e
            scores = np.concatenate(parts)
        scores = np.asarray(scores, dtype=np.float64).reshape(len(x), -1)
        if not self.softmax:
            return scores
        e = np.exp(scores - scores.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def top_k(self, raw: Any) -> int:
        if raw is None or raw == "":
            return min(DEFAULT_TOP_K, len(self.labels))
        try:
            k = int(raw)
        except (TypeError, ValueError):
            k = 0
        if k < 1 or isinstance(raw, bool | float):
            raise InvalidInputError(f"top_k must be a positive integer (at most {len(self.labels)}), got {raw!r}")
        return min(k, len(self.labels))

    def best(self, probs: np.ndarray, k: int) -> np.ndarray:
        """Indices of the k highest probabilities of each row, highest first."""
        idx = np.argpartition(-probs, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(probs, idx, axis=1), axis=1, kind="stable")
        return np.take_along_axis(idx, order, axis=1)


def limit_error(message: str, setting: str) -> LimitExceededError:
    return LimitExceededError(f"{message} (modelport serve {_OPTIONS[setting]} N raises it)")


# -- POST /predict -----------------------------------------------------------------------------

async def predict(model: ServedModel, scope: Scope, body: bytes) -> Reply:
    """One image (raw bytes or a multipart ``image`` field) → its top-k classes (``top_k`` in the
    form or the query string)."""
    clf = Classifier.of(model)
    request = Request(scope)  # headers and query string only: the body is read already
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    top_k: Any = request.query_params.get("top_k")
    form_top_k = None
    if media_type == "multipart/form-data":
        data, form_top_k = await _read_form(request, body)
    elif media_type in ("application/json", "application/x-www-form-urlencoded") and not _looks_binary(body):
        raise InvalidInputError(f"{NO_IMAGE}: {HOW_TO_SEND}")
    else:  # image/*, application/octet-stream, none, or curl --data-binary's default form type with image bytes
        data = body
    k = clf.top_k(top_k)  # checked even when the form field wins: a bad value is never silently ignored
    if form_top_k is not None:
        k = clf.top_k(form_top_k)
    x = await clf.decode(data, PixelBudget(model.image_limits.max_request_pixels))
    probs = await clf.probabilities(model, x[None])
    (best,) = clf.best(probs, k)
    prediction = [{"class": clf.labels[i], "confidence": float(probs[0, i])} for i in best]
    return Reply(orjson.dumps({"prediction": prediction}))


def _looks_binary(body: bytes) -> bool:
    return b"\0" in body[:512] or body.startswith((b"\xff\xd8", b"\x89PNG"))


async def _read_form(request: Request, body: bytes) -> tuple[bytes, str | None]:
    """-> (the 'image' file's bytes, the 'top_k' field if sent). The body is already read (and size-checked)."""

    async def stream():
        yield body

    parser = MultiPartParser(request.headers, stream(), max_files=1, max_fields=8, max_part_size=64 * 1024)
    try:
        form = await parser.parse()
    except MultiPartException as e:
        raise InvalidInputError(f"Malformed multipart body: {e.message}") from None
    try:
        image = form.get("image")
        if image is None:
            # Name what was sent: an upload under another name (curl -F file=@x.jpg) is the usual mistake.
            got = ", ".join(dict.fromkeys(form.keys())) or "none"
            raise InvalidInputError(f"{NO_IMAGE}: send the image as the multipart file field 'image', "
                                    f"e.g. curl -F image=@photo.jpg (got fields: {got})")
        if not isinstance(image, UploadFile):
            raise InvalidInputError(f"{NO_IMAGE}: the field 'image' must be a file upload (curl -F image=@photo.jpg)")
        top_k = form.get("top_k")
        return await image.read(), (top_k if isinstance(top_k, str) else None)
    finally:
        await form.close()


# -- Open Inference Protocol v2 ------------------------------------------------------------------

async def v2_outputs(model: ServedModel, request: dict[str, Any], tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One BYTES input of N encoded images ([N] or [N, 1]; base64 strings when sent as JSON) ->
    ``probabilities`` FP32 [N, classes], ``labels`` BYTES [N, k], ``confidences`` FP32 [N, k]."""
    clf = Classifier.of(model)
    if len(tensors) != 1:
        raise InvalidInputError(f"The model takes one BYTES input (the encoded image files), got {len(tensors)} inputs")
    ((name, arr),) = tensors.items()
    if arr.dtype != object:
        raise InvalidInputError(f"Input {name!r} must be BYTES: the encoded image files (JPEG, PNG, ...)")
    if arr.ndim not in (1, 2) or (arr.ndim == 2 and arr.shape[1] != 1) or arr.shape[0] == 0:
        raise InvalidInputError(f"Input {name!r} has shape {list(arr.shape)}; send [N] or [N, 1] images, N >= 1")
    limits = model.image_limits
    if arr.shape[0] > limits.max_images:  # before any decoding: 1,500 tiny images once took a worker to 15 GB
        raise limit_error(f"Input {name!r} has {arr.shape[0]} images; the limit is {limits.max_images} per request",
                          "max_images")
    spec = next(s for s in request["inputs"] if s.get("name") == name)
    binary = (spec.get("parameters") or {}).get("binary_data_size") is not None
    items = [item if binary else _unbase64(item, name, i) for i, item in enumerate(arr.reshape(-1))]
    k = clf.top_k((request.get("parameters") or {}).get("top_k"))
    budget = PixelBudget(limits.max_request_pixels)
    x = np.stack(await asyncio.gather(*(clf.decode(d, budget, f"Input {name!r}[{i}]: ") for i, d in enumerate(items))))
    probs = await clf.probabilities(model, x)
    best = clf.best(probs, k)
    return {"probabilities": probs.astype(np.float32), "labels": clf.labels[best],
            "confidences": np.take_along_axis(probs, best, axis=1).astype(np.float32)}


def _unbase64(item: bytes, name: str, i: int) -> bytes:
    # JSON strings cannot carry binary: over JSON, BYTES image data is base64 (KServe's convention).
    try:
        return base64.b64decode(item, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInputError(f"Input {name!r}[{i}]: BYTES sent as JSON must be the base64 of an image file "
                                "(or send it as binary data)") from None
