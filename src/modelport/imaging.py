"""Decode uploaded images and turn them into model input tensors (numpy + Pillow; no torch).

Every failure a client can cause raises :class:`ImageInputError` with a message a person
understands; the server maps it to a 4xx answer. Decoding is strict on purpose:

* Pillow's ``ImageFile.LOAD_TRUNCATED_IMAGES`` stays False, so a cut-off upload is rejected
  instead of being padded with gray and classified anyway.
* The pixel count is read from the header and checked *before* any pixel memory is allocated,
  so a tiny file that declares 40000x40000 pixels costs nothing.
* Only common raster formats are opened; Pillow plugins such as EPS (which runs Ghostscript)
  are never reached from an upload.
* A request's images share a :class:`PixelBudget`: the pixels each one will decode are taken from it
  before decoding, so many small images cannot add up to unbounded work either.

Transparency is composited onto white rather than dropped: the colour stored under fully
transparent pixels is arbitrary (often black), and white is how a viewer usually shows it.
"""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from modelport.errors import ModelportError

__all__ = ["DEFAULT_MAX_PIXELS", "FORMATS", "ImageInputError", "ImageLimitError", "PixelBudget",
           "decode_image", "preprocess", "preprocess_bytes"]

# Pillow itself refuses more than 2 x Image.MAX_IMAGE_PIXELS (~179M) whatever max_pixels says.
DEFAULT_MAX_PIXELS = 40_000_000
# "JPEG" also opens the MPO files many cameras write (Pillow reports their format as MPO).
FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")
# Magic numbers of those formats: a file that starts like one but cannot be opened is damaged, not "not an image".
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")
_WHITE = (255, 255, 255)
Image.init()  # register every plugin: Image.open(formats=...) only sees plugins already imported
_RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


class ImageInputError(ModelportError, ValueError):
    """An uploaded image that cannot be used; the message is meant for the person who sent it."""


class ImageLimitError(ImageInputError):
    """A request beyond a configured limit of the server (not a broken image): answered with a 413."""

    def __init__(self, message: str, setting: str) -> None:
        super().__init__(message)
        self.setting = setting  # the serving.limits.ImageLimits field that would have to be raised


class PixelBudget:
    """The decoded pixels one request may still spend, shared by the threads decoding its images.

    Once any of the request's images fails, ``close`` makes every image not yet started fail at once,
    so a doomed request stops taking decoding time from others."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used = 0
        self._closed = False
        self._lock = threading.Lock()

    def take(self, pixels: int) -> None:
        with self._lock:
            if self._closed:
                raise ImageInputError("Not decoded: another image of this request was refused")
            if self._used + pixels > self.limit:
                self._closed = True
                raise ImageLimitError(f"The images of this request have more than {self.limit} pixels in all; "
                                      f"the limit is {self.limit}", "max_request_pixels")
            self._used += pixels

    def close(self) -> None:
        with self._lock:
            self._closed = True


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode ``data`` fully into an RGB image with its EXIF orientation applied (first frame if animated)."""
    return _decode(data, max_pixels=max_pixels, draft_side=None)


def preprocess_bytes(data: bytes, spec: Mapping[str, Any], max_pixels: int = DEFAULT_MAX_PIXELS,
                     budget: PixelBudget | None = None) -> np.ndarray:
    """Decode and preprocess in one go; a JPEG far larger than the model input is decoded at 1/2 to 1/8 scale.
    The pixels decoded are taken from ``budget`` (the request's) first."""
    return preprocess(_decode(data, max_pixels=max_pixels, draft_side=int(spec["resize"]), budget=budget), spec)


def preprocess(img: Image.Image, spec: Mapping[str, Any]) -> np.ndarray:
    """Resize the short side, center-crop, scale and normalise: float32 ``[3, crop, crop]``, RGB.

    ``spec`` is a dict like ``modelport.pretrained.IMAGENET_PREPROCESS`` (lists or tuples; JSON round-trips).
    Matches torchvision's ``Resize(resize) -> CenterCrop(crop) -> ToTensor -> Normalize`` on a PIL image.
    """
    if spec.get("layout", "NCHW") != "NCHW" or spec.get("channels", "RGB") != "RGB":
        raise ValueError(
            f"unsupported preprocessing spec: layout {spec.get('layout')}, channels {spec.get('channels')}"
        )
    img = _to_rgb(img)
    resize, crop = int(spec["resize"]), int(spec["crop"])
    w, h = img.size
    # torchvision's rule: short side -> resize, long side -> int(resize * long / short) (truncated).
    nw, nh = (resize, int(resize * h / w)) if w <= h else (int(resize * w / h), resize)
    if crop > min(nw, nh):
        raise ValueError(f"crop {crop} is larger than resize {resize}")
    left, top = round((nw - crop) / 2), round((nh - crop) / 2)  # torchvision's center_crop offsets
    sx, sy = w / nw, h / nh
    # Resampling only the source box that lands in the crop gives resize-then-crop's pixels
    # without computing the rows and columns that the crop throws away.
    box = (left * sx, top * sy, (left + crop) * sx, (top + crop) * sy)
    img = img.resize((crop, crop), _RESAMPLING[spec.get("interpolation", "bilinear")], box=box)

    mean = np.asarray(spec["mean"], dtype=np.float64)
    std = np.asarray(spec["std"], dtype=np.float64)
    rescale = float(spec.get("rescale", 1 / 255))
    # (x * rescale - mean) / std  ==  x * scale - shift; the multiply also casts and transposes HWC -> CHW.
    scale = (rescale / std).astype(np.float32)[:, None, None]
    shift = (mean / std).astype(np.float32)[:, None, None]
    out = np.empty((3, crop, crop), dtype=np.float32)
    np.multiply(np.asarray(img).transpose(2, 0, 1), scale, out=out)
    out -= shift
    return out


def _decode(data: bytes, *, max_pixels: int, draft_side: int | None, budget: PixelBudget | None = None) -> Image.Image:
    if not data:
        raise ImageInputError("Empty file")
    try:
        img = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError as e:
        # Pillow's own hard limit (2 x Image.MAX_IMAGE_PIXELS), checked on the header inside open().
        declared = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{declared[1]} pixels" if declared else "too large"
        raise ImageInputError(f"Image is {size}; the limit is {max_pixels} pixels") from e
    except Image.UnidentifiedImageError as e:
        if data.startswith(_SIGNATURES):
            raise ImageInputError("Image is truncated or corrupt") from e
        raise ImageInputError(f"Not an image (could not identify format; accepted: {', '.join(FORMATS)})") from e
    except Exception as e:  # a header bad enough to break a plugin
        raise ImageInputError("Image is truncated or corrupt") from e
    w, h = img.size  # from the header: nothing has been decoded yet
    if w * h > max_pixels:
        raise ImageInputError(f"Image is {w}x{h} pixels; the limit is {max_pixels} pixels")
    if w == 0 or h == 0:
        raise ImageInputError(f"Image is {w}x{h} pixels; it has no pixels")
    try:
        if draft_side is not None:
            # JPEG only (a no-op for other formats): let libjpeg decode at 1/2, 1/4 or 1/8 scale
            # while both sides stay >= 2x the resize target, so the final downscale still antialiases.
            img.draft(None, (2 * draft_side, 2 * draft_side))
        if budget is not None:
            budget.take(img.size[0] * img.size[1])  # after draft: what will really be decoded
        img.load()  # decode everything now, inside the try: truncation surfaces here
        ImageOps.exif_transpose(img, in_place=True)
        return _to_rgb(img)
    except (ImageInputError, MemoryError):
        raise
    except Exception as e:  # plugins raise OSError, SyntaxError, ValueError, struct.error, ... on bad data
        raise ImageInputError("Image is truncated or corrupt") from e


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB; alpha is composited on white."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I"):  # I;16, I;16B, I;16L, I (PNG/TIFF 16-bit gray; I holds the same 0..65535 range)
        # convert("L") would clip everything above 255 to white; scale 0..65535 -> 0..255 instead.
        arr = np.asarray(img).astype(np.float32)
        return Image.fromarray(np.rint(np.clip(arr, 0, 65535) / 257).astype(np.uint8)).convert("RGB")
    if mode == "F":
        raise ImageInputError("Floating-point images are not supported; send 8- or 16-bit pixels")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        out = Image.new("RGB", img.size, _WHITE)
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    return img.convert("RGB")  # L, 1, P, CMYK (naive: no ICC profile), YCbCr
