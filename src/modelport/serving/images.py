"""Image classification over the simple API: ``/predict`` uploads (multipart field ``image`` or a raw image body).
(Open Inference Protocol v2 requests, a BYTES input of encoded images, are the served model's handler:
``ServedModel.infer``, after ``serving.v2`` decoded them.)

The HTTP edge over ``modelport.images.classifier``: what the body holds (a multipart form or a raw image) is
read here and the answer written; decoding, the model call and the top k are the Classifier's.

What one request may cost is bounded before any work is done (``serving.limits``): at most ``max_images``
images (413 beyond), and at most ``max_request_pixels`` decoded pixels for all of them together (413).

Per image: parse the upload on the event loop (cheap: ~1 ms of CPU for a 400 KB multipart body), then the
served model (``ServedModel.classify``) decodes it in its pool and runs the model through the adaptive batcher.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.types import Scope

from modelport.errors import InvalidInputError
from modelport.serving.http import NO_IMAGE, Reply
from modelport.serving.runtime import ServedModel

HOW_TO_SEND = ("send a multipart/form-data upload with the file in the field 'image', "
               "or the image itself as the body with Content-Type image/jpeg or image/png")


# -- POST /predict -----------------------------------------------------------------------------

async def predict(model: ServedModel, scope: Scope, body: bytes) -> Reply:
    """One image (raw bytes or a multipart ``image`` field) → its top-k classes (``top_k`` in the
    form or the query string)."""
    clf = model.classifier
    assert clf is not None  # an image model's, built at load
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
    probs, (best,) = await model.classify([data], k)
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
