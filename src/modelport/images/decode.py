"""Decode uploaded images and turn them into model input tensors (numpy + Pillow; no torch).

Every failure a client can cause raises :class:`ImageInputError` with a message a person
understands; the server maps it to a 4xx answer. Decoding is strict on purpose:

* Pillow's ``ImageFile.LOAD_TRUNCATED_IMAGES`` stays False, so a cut-off upload is rejected
  instead of being padded with gray and classified anyway.
* The pixel count is read from the header and checked *before* any pixel memory is allocated,
  so a tiny file that declares 40000x40000 pixels costs nothing.
* Only common raster formats are opened; Pillow plugins such as EPS (which runs Ghostscript)
  are never reached from an upload.
* A JPEG's scans are counted from its structure before decoding. Each scan of a progressive JPEG walks
  every block of the image however few bytes it has, so a 130 KB file that repeats one tiny refinement
  scan 1,000 times over 4096x4096 pixels takes 18 s of CPU to decode; real ones have about 10 scans.
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
           "decode_image", "jpeg_scans", "preprocess", "preprocess_bytes"]

# Pillow itself refuses more than 2 x Image.MAX_IMAGE_PIXELS (~179M) whatever max_pixels says.
DEFAULT_MAX_PIXELS = 40_000_000
# "JPEG" also opens the MPO files many cameras write (Pillow reports their format as MPO).
FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")
# Magic numbers of those formats: a file that starts like one but cannot be opened is damaged, not "not an image".
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")
_WHITE = (255, 255, 255)
# Decoding work of a JPEG grows with scans x pixels: 1-4 ns each (libjpeg-turbo, blank 4096x4096 image,
# idle to busy machine), so 5e8 is 0.5-2 s. A real progressive JPEG (~10 scans) of 40M pixels fits.
MAX_JPEG_SCANS = 100
MAX_JPEG_SCAN_PIXELS = 500_000_000
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

    ``spec`` is a dict like ``modelport.images.pretrained.IMAGENET_PREPROCESS`` (lists or tuples; JSON round-trips).
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
    if img.format in ("JPEG", "MPO"):
        _check_scans(data, w, h)
    if budget is not None:
        # The full size even where draft below decodes at a reduced scale: a JPEG's entropy decoding,
        # where its scans cost, works on every block whatever the output scale.
        budget.take(w * h)
    try:
        if draft_side is not None:
            # JPEG only (a no-op for other formats): let libjpeg decode at 1/2, 1/4 or 1/8 scale
            # while both sides stay >= 2x the resize target, so the final downscale still antialiases.
            img.draft(None, (2 * draft_side, 2 * draft_side))
        img.load()  # decode everything now, inside the try: truncation surfaces here
        ImageOps.exif_transpose(img, in_place=True)
        return _to_rgb(img)
    except (ImageInputError, MemoryError):
        raise
    except Exception as e:  # plugins raise OSError, SyntaxError, ValueError, struct.error, ... on bad data
        raise ImageInputError("Image is truncated or corrupt") from e


def _check_scans(data: bytes, w: int, h: int) -> None:
    limit = max(1, min(MAX_JPEG_SCANS, MAX_JPEG_SCAN_PIXELS // (w * h)))
    scans = jpeg_scans(data, stop_after=limit)
    if scans > limit:
        raise ImageInputError(f"JPEG has more than {limit} scans; at most {limit} are accepted for a {w}x{h} image "
                              "(a progressive JPEG usually has about 10): it would take too long to decode")


def jpeg_scans(data: bytes, stop_after: int = MAX_JPEG_SCANS) -> int:
    """The start-of-scan (SOS) markers of a JPEG's first image, counted from its segment structure without
    decoding; counting stops past ``stop_after``.

    Markers are found as libjpeg finds them: bytes that are no marker are skipped (libjpeg warns about
    "extraneous bytes" and goes on), so garbage between segments cannot hide scans from the count."""
    pos, scans, size = 2, 0, len(data)
    while (pos := data.find(b"\xff", pos)) >= 0 and pos + 1 < size:
        marker = data[pos + 1]
        if marker in (0x00, 0xFF):  # a stray 0xFF, or fill bytes before a marker
            pos += 1
            continue
        if marker == 0xD9:  # end of image: an MPO's further images or trailing bytes are not decoded
            break
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")  # the segment, its length field included
        if marker == 0xDA:
            scans += 1
            if scans > stop_after:
                break
            # The scan's entropy-coded data runs to the next marker: there 0xFF is followed by 0x00 (a
            # stuffed data byte) or a restart marker; anything else is the next segment.
            while (pos := data.find(b"\xff", pos)) >= 0 and pos + 1 < size and (
                    data[pos + 1] == 0 or 0xD0 <= data[pos + 1] <= 0xD7):
                pos += 2
            if pos < 0:
                break
    return scans


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
