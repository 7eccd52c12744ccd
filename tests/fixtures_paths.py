"""Encodings of the gateway's prediction paths that a client might use to slip past it, sent as raw
bytes (http.client does not normalise paths as httpx does), for the host and stack tests; and
``ambiguity``, the rule the gateway's path guard follows (once the Python gateway's), as their oracle.

The gateway routes (and authenticates) on the path decoded once; the model server behind it decodes
the forwarded path once more. Any path whose meaning could change with one more decoding or a
normalisation step (double percent-encoding, encoded slashes, dot segments, ``;`` parameters,
backslashes, control characters) is refused, so the two always agree on what was asked for."""

from __future__ import annotations

import http.client
import re
from urllib.parse import unquote

import orjson

# In the raw path: an encoded '/', '\' or '%' hides a separator or a second round of encoding.
_ENCODED_SEPARATOR = re.compile(rb"%(2f|5c|25)", re.IGNORECASE)
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f\\;%]")


def ambiguity(raw_path: bytes, path: str) -> str | None:
    """Why this path is refused, or None. ``path`` is ``raw_path`` decoded once (the ASGI ``path``)."""
    if not raw_path.startswith(b"/"):
        return "the path must start with '/'"
    if _ENCODED_SEPARATOR.search(raw_path):
        return "percent-encoded '/', '\\' or '%' in the path"
    if (bad := _FORBIDDEN.search(path)) is not None:
        return f"character {bad.group()!r} in the path"
    segments = path.split("/")[1:]
    if any(s in (".", "..") for s in segments):
        return "'.' or '..' segment in the path"
    if any(s == "" for s in segments[:-1]):
        return "empty segment ('//') in the path"
    return None


# Once decoded, each of these is the exact prediction route it spells: the gateway authenticates,
# logs and forwards it like the plain path.
SAME_ROUTE = ["/%70redict", "/pre%64ict", "/models/l%69n/predict", "/v2/models/lin/%69nfer",
              "/predict?x=%2570"]
# Everything else: double and mixed encoding, encoded separators, dot segments, case, trailing
# slashes, ';' parameters, backslashes and control characters. None may reach a model.
AMBIGUOUS = [
    "/%2570redict", "/%25%37%30redict", "/%2570re%64ict", "/%252570redict",
    "/models/lin/%2570redict", "/models/%256Cin/predict", "/v2/models/lin/%2569nfer",
    "/v2/models/lin/versions/1/%2569nfer", "/v2/models/%256Cin/infer",
    "/models/lin%2Fpredict", "/models%2flin%2fpredict", "/%5Cpredict", "/\\predict",
    "/./predict", "/x/../predict", "/%2e/predict", "/%2E%2E/predict", "/models/lin/./predict",
    "/v2/models/lin/../lin/infer", "/v2/models/lin/versions/1/../../lin/infer",
    "//predict", "/v2//models/lin/infer", "/models//lin/predict",
    "/PREDICT", "/Predict", "/Models/lin/predict", "/V2/models/lin/infer",
    "/predict/", "/models/lin/predict/", "/v2/models/lin/infer/",
    "/predict;x=1", "/predict%3Bx=1", "/models/lin;v=2/predict", "/v2/models/lin/infer;x",
    "/predict%00", "/predict%09", "/predict%0d%0a", "/predict%7f",
    "/predict.json", "/predictx", "/models/lin/predict/x", "/v2/models/lin/infer/x",
]


def raw_post(port: int, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """POST exactly ``path`` (no normalisation, no re-encoding)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.putrequest("POST", path, skip_accept_encoding=True)
        for k, v in {"content-type": "application/json", "content-length": str(len(body)), **(headers or {})}.items():
            conn.putheader(k, v)
        conn.endheaders(body)
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


def decoded_route(path: str) -> str:
    return unquote(path.split("?", 1)[0])


def body_for(path: str, n_features: int) -> bytes:
    """A valid body for the route ``path`` spells (v2 or the simple API)."""
    if "/v2/" in decoded_route(path).lower():
        return orjson.dumps({"inputs": [{"name": "input", "shape": [1, n_features], "datatype": "FP64",
                                         "data": [0.5] * n_features}]})
    return orjson.dumps({"features": [0.5] * n_features})
