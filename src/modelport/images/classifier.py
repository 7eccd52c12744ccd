"""Serving an image classifier (serving-time): its stored preprocessing applied to uploaded bytes, its stored
class labels read, and the Classifier that turns encoded images into class probabilities and the top k.

What registration stored (``modelport.images.register``) is trusted here: the preprocessing spec was checked,
and the model run once on it, when the model was imported.

Per image: decode + preprocess in a thread pool (Pillow and numpy release the GIL, so decoding overlaps the model
call running in the batcher's thread), then run the model through the adaptive batcher, so images decoded at about
the same time share one onnxruntime call.

The pool has one thread per core the worker may use (``MODELPORT_THREADS_PER_WORKER``, set by ``serve`` to
cores / workers; ``MODELPORT_DECODE_THREADS`` overrides it). With the default of one worker per core, every
worker then has one decoding and one onnxruntime thread: measured best (``bench/images.py``), as more threads
per core only add switching.

No HTTP here: ``modelport.serving.images`` reads the uploads and writes the answers.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from concurrent.futures import Executor
from typing import Any

import numpy as np

from modelport.errors import InvalidInputError, LimitExceededError, ModelportError
from modelport.images.decode import DEFAULT_MAX_PIXELS, ImageInputError, ImageLimitError, PixelBudget, preprocess_bytes
from modelport.store import ModelVersion

__all__ = ["LABELS_FILE", "Classifier", "Preprocessor", "decode_threads", "parse_labels"]

LABELS_FILE = "labels.txt"
DEFAULT_TOP_K = 3
_OPTIONS = {"max_images": "--max-images", "max_request_pixels": "--max-request-pixels"}  # serve's option per limit


# -- preprocessing -----------------------------------------------------------------------------

class Preprocessor:
    """Encoded image bytes -> one model input ``[3, crop, crop]`` (or ``[crop, crop, 3]`` for NHWC)."""

    def __init__(self, spec: Mapping[str, Any], max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.spec = dict(spec)
        self.max_pixels = max_pixels
        self.bgr = spec.get("channels", "RGB") == "BGR"
        self.nhwc = spec.get("layout", "NCHW") == "NHWC"
        # modelport.images.decode works in RGB/NCHW; mean/std are given in the model's order, so flip them for it.
        flip = (lambda v: list(v)[::-1]) if self.bgr else list
        self._rgb = {**self.spec, "mean": flip(spec["mean"]), "std": flip(spec["std"]), "channels": "RGB", "layout": "NCHW"}

    def __call__(self, data: bytes, budget: PixelBudget | None = None) -> np.ndarray:
        x = preprocess_bytes(data, self._rgb, self.max_pixels, budget)
        if self.bgr:
            x = x[::-1]
        if self.nhwc:
            x = x.transpose(1, 2, 0)
        return np.ascontiguousarray(x) if (self.bgr or self.nhwc) else x


# -- labels ------------------------------------------------------------------------------------

def parse_labels(data: bytes, source: str = "labels") -> list[str]:
    """Class names, index = class id: one per line, or a JSON list, or a JSON object {"0": name, ...}
    (Keras' imagenet_class_index.json style {"0": ["n01440764", "tench"]} takes the last item)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ModelportError(f"{source} is not UTF-8 text") from None
    stripped = text.strip()
    if stripped.startswith(("[", "{")):
        try:
            obj = json.loads(stripped)
        except json.JSONDecodeError as e:
            raise ModelportError(f"{source} looks like JSON but is not valid: {e}") from None
        if isinstance(obj, dict):
            try:
                items = sorted((int(k), v) for k, v in obj.items())
            except ValueError:
                raise ModelportError(f"{source}: a JSON object of labels needs class indices as keys") from None
            if [i for i, _ in items] != list(range(len(items))):
                raise ModelportError(f"{source}: class indices must be 0..{len(items) - 1} without gaps")
            obj = [v[-1] if isinstance(v, list) and v else v for _, v in items]
        if not isinstance(obj, list) or not all(isinstance(v, str) for v in obj):
            raise ModelportError(f"{source}: JSON labels must be a list of strings")
        return check_labels(obj, source)
    labels = text.splitlines()
    while labels and not labels[-1].strip():
        labels.pop()
    return check_labels(labels, source)


def check_labels(labels: list[str], source: str = "labels") -> list[str]:
    """Stripped class names; none may be empty or span lines (labels.txt stores one per line)."""
    labels = [v.strip() for v in labels]
    if not labels:
        raise ModelportError(f"{source} has no labels")
    empty = [i for i, v in enumerate(labels) if not v]
    if empty:
        raise ModelportError(f"{source}: label {empty[0]} (line {empty[0] + 1}) is empty")
    if any(len(v.splitlines()) > 1 for v in labels):
        raise ModelportError(f"{source}: a label contains a line break")
    return labels


def read_labels(info: ModelVersion, files: Mapping[str, bytes]) -> list[str]:
    """The labels of a registered image classifier, from its verified files."""
    if LABELS_FILE not in files:
        raise ModelportError(f"{info.ref} is an image classifier without {LABELS_FILE}")
    return parse_labels(files[LABELS_FILE], LABELS_FILE)


# -- the classifier ----------------------------------------------------------------------------

def decode_threads() -> int:
    """Decoding threads for one worker: one per core it may use (serve sets cores / workers)."""
    n = int(os.environ.get("MODELPORT_DECODE_THREADS") or os.environ.get("MODELPORT_THREADS_PER_WORKER")
            or os.cpu_count() or 1)
    return max(1, n)


class Classifier:
    """What serving one image model needs, prepared once at load: labels, preprocessing, the pool that
    decodes its uploads (owned by the model set) and how to read its scores. The model call is not
    here: the served model runs it (batched) and hands the scores to ``probabilities``."""

    def __init__(self, info: ModelVersion, labels: list[str], pool: Executor) -> None:
        extra = info.extra
        self.labels = np.array(labels, dtype=object)
        self.preprocess = Preprocessor(extra["preprocess"])
        self.softmax = extra.get("scores", "logits") == "logits"
        self.pool = pool

    async def decode(self, data: bytes, budget: PixelBudget, where: str = "") -> np.ndarray:
        """One image -> its model input. A failure closes ``budget``: the request's other images are not decoded."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, self.preprocess, data, budget)
        except ImageLimitError as e:
            raise limit_error(str(e), e.setting) from None
        except ImageInputError as e:
            budget.close()
            raise InvalidInputError(f"{where}{e}") from None
        except MemoryError:
            budget.close()
            raise LimitExceededError(f"{where}Image is too large to decode") from None

    async def decode_all(self, images: list[bytes], max_pixels: int, where: str = "") -> np.ndarray:
        """Encoded images -> [N, ...] model inputs, decoding to at most ``max_pixels`` together; an error
        about image i starts with ``{where}[i]: `` when ``where`` is given."""
        budget = PixelBudget(max_pixels)
        return np.stack(await asyncio.gather(*(self.decode(d, budget, f"{where}[{i}]: " if where else "")
                                              for i, d in enumerate(images))))

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        """[N, ...] model scores -> [N, classes] float64 probabilities."""
        scores = np.asarray(scores, dtype=np.float64).reshape(len(scores), -1)
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
