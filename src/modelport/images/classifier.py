"""Serving an image classifier (serving-time): its stored preprocessing applied to uploaded bytes, its stored
class labels read.

What registration stored (``modelport.images.register``) is trusted here: the preprocessing spec was checked,
and the model run once on it, when the model was imported.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from modelport.errors import ModelportError
from modelport.images.decode import DEFAULT_MAX_PIXELS, PixelBudget, preprocess_bytes
from modelport.store import ModelVersion

__all__ = ["LABELS_FILE", "Preprocessor", "parse_labels"]

LABELS_FILE = "labels.txt"


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
