"""Decoding and preprocessing of uploaded images (modelport.images.decode): numpy + Pillow only."""

from __future__ import annotations

import io
import json
import resource
import struct
import zlib

import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageFile

from modelport.images.decode import (
    ImageInputError,
    ImageLimitError,
    PixelBudget,
    decode_image,
    jpeg_scans,
    preprocess,
    preprocess_bytes,
)

SPEC = {
    "resize": 256,
    "interpolation": "bilinear",
    "crop": 224,
    "rescale": 1 / 255,
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
    "channels": "RGB",
    "layout": "NCHW",
    "dtype": "float32",
}
ONE_LEVEL = 1 / 255 / min(SPEC["std"])  # one uint8 step after normalisation


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


@pytest.fixture(scope="module")
def chelsea() -> Image.Image:
    return Image.fromarray(skimage.data.chelsea())


def reference(img: Image.Image) -> np.ndarray:
    """torchvision's Resize(256) -> CenterCrop(224) -> ToTensor -> Normalize on a PIL image, in float64."""
    w, h = img.size
    nw, nh = (256, int(256 * h / w)) if w <= h else (int(256 * w / h), 256)
    img = img.resize((nw, nh), Image.Resampling.BILINEAR)
    left, top = round((nw - 224) / 2), round((nh - 224) / 2)
    x = np.asarray(img.crop((left, top, left + 224, top + 224)), dtype=np.float64).transpose(2, 0, 1) / 255
    return (x - np.array(SPEC["mean"])[:, None, None]) / np.array(SPEC["std"])[:, None, None]


# --- preprocessing -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [None, (300, 1000), (1000, 672), (257, 256), (100, 80)])
def test_preprocess_matches_torchvision_recipe(chelsea, size):
    img = chelsea if size is None else chelsea.resize(size)
    x = preprocess(img, SPEC)
    assert x.shape == (3, 224, 224) and x.dtype == np.float32 and x.flags.c_contiguous
    # Resampling only the cropped box may round a rare pixel the other way: at most one uint8 level.
    diff = np.abs(x - reference(img))
    assert diff.max() <= ONE_LEVEL + 1e-5
    assert (diff > 1e-5).mean() < 0.01


def test_spec_survives_json_round_trip(chelsea):
    spec = json.loads(json.dumps(SPEC))  # tuples become lists, as when read back from a model's metadata
    np.testing.assert_array_equal(preprocess(chelsea, spec), preprocess(chelsea, SPEC))


def test_spec_other_layout_is_refused(chelsea):
    with pytest.raises(ValueError, match="layout"):
        preprocess(chelsea, {**SPEC, "layout": "NHWC"})


def test_large_jpeg_is_decoded_at_reduced_size_without_visible_change(chelsea):
    big = chelsea.resize((chelsea.width * 6, chelsea.height * 6), Image.Resampling.LANCZOS)
    data = encode(big, "JPEG", quality=92)
    full = preprocess(Image.open(io.BytesIO(data)), SPEC)  # full-size decode, no draft
    fast = preprocess_bytes(data, SPEC)
    assert np.abs(fast - full).mean() < 0.01
    assert np.abs(fast - full).max() < 0.1


# --- inputs that must be refused ----------------------------------------------------------------


def test_truncated_images_are_not_padded():
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # importing modelport must not flip Pillow's global


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "Empty file"),
        (b"hello, this is text", "Not an image"),
        (b"\x00" * 1000, "Not an image"),
        (b"%PDF-1.4\n%", "Not an image"),
    ],
)
def test_not_an_image(data, message):
    with pytest.raises(ImageInputError, match=message):
        decode_image(data)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("keep", [0.02, 0.3, 0.6, 0.9, -40])
def test_truncated_file_is_refused(chelsea, fmt, keep):
    data = encode(chelsea, fmt)
    cut = data[:keep] if keep < 0 else data[: int(len(data) * keep)]
    with pytest.raises(ImageInputError, match="truncated or corrupt"):
        decode_image(cut)
    with pytest.raises(ImageInputError, match="truncated or corrupt"):
        preprocess_bytes(cut, SPEC)


def test_png_missing_only_its_trailer_has_every_pixel(chelsea):
    # The last 20 bytes are checksums and the IEND chunk, no pixels: decoding it loses nothing.
    np.testing.assert_array_equal(np.asarray(decode_image(encode(chelsea, "PNG")[:-20])), np.asarray(chelsea))


def test_corrupt_png_data_is_refused(chelsea):
    data = bytearray(encode(chelsea, "PNG"))
    data[len(data) // 2] ^= 0xFF  # flips bits inside the compressed pixels: zlib or the CRC notices
    with pytest.raises(ImageInputError, match="truncated or corrupt"):
        decode_image(bytes(data))


def test_formats_outside_the_list_are_not_opened(chelsea):
    # EPS would run Ghostscript; ICO is just not on the list. Neither reaches a decoder.
    for fmt in ("EPS", "ICO"):
        with pytest.raises(ImageInputError, match="Not an image"):
            decode_image(encode(chelsea.resize((64, 64)), fmt))


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG header declaring width x height, and a few bytes of pixel data: a decompression bomb's shape."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


def jpeg_with_declared_size(chelsea: Image.Image, width: int, height: int) -> bytes:
    data = bytearray(encode(chelsea.resize((32, 32)), "JPEG"))
    sof = data.index(b"\xff\xc0")  # baseline frame header: length(2) precision(1) height(2) width(2)
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def test_decompression_bomb_is_refused_from_the_header(chelsea):
    # Had any pixel been decoded, these files (which hold almost no pixel data) would fail as
    # "truncated" instead: the size message proves the check ran before decoding and allocation.
    with pytest.raises(ImageInputError, match=r"Image is 8000x6000 pixels; the limit is 40000000 pixels"):
        decode_image(png_header_only(8000, 6000))
    with pytest.raises(ImageInputError, match=r"Image is 9000x6000 pixels; the limit is 40000000 pixels"):
        preprocess_bytes(jpeg_with_declared_size(chelsea, 9000, 6000), SPEC)
    with pytest.raises(ImageInputError, match=r"Image is 30x30 pixels; the limit is 800 pixels"):
        decode_image(png_header_only(30, 30), max_pixels=800)


def test_giant_declared_size_is_refused_even_past_pillows_own_limit(chelsea):
    # Past 2 x Image.MAX_IMAGE_PIXELS Pillow raises inside Image.open itself; the message stays ours.
    with pytest.raises(ImageInputError, match=r"Image is 1600000000 pixels; the limit is 40000000 pixels"):
        decode_image(png_header_only(40000, 40000))
    with pytest.raises(ImageInputError, match=r"the limit is 40000000 pixels"):
        decode_image(jpeg_with_declared_size(chelsea, 65000, 65000))


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_size_between_pillows_warning_and_error_is_refused():
    with pytest.raises(ImageInputError, match=r"Image is 10000x10000 pixels"):
        decode_image(png_header_only(10000, 10000))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


@pytest.mark.parametrize("kind", [b"zTXt", b"iCCP", b"iTXt"])
def test_a_png_chunk_bomb_is_refused_without_inflating_it(kind: bytes) -> None:
    """A 200 KB text or ICC chunk that inflates to 200 MB: refused, never held in memory."""
    png = encode(Image.new("RGB", (64, 64), (200, 10, 10)), "PNG")
    payload = zlib.compress(b"\0" * 200_000_000, 9)
    header = {b"zTXt": b"k\0\0", b"iCCP": b"p\0\0", b"iTXt": b"k\0\1\0\0\0"}[kind]
    bomb = png[:33] + _png_chunk(kind, header + payload) + png[33:]  # after the signature and IHDR
    assert len(bomb) < 300_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ImageInputError):
        preprocess_bytes(bomb, SPEC)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50 * 1024  # KiB: nothing near 200 MB


def test_a_frame_bomb_decodes_only_its_first_frame() -> None:
    """Thousands of frames, every one after the first broken: only the first is ever decoded."""
    frames = [Image.new("RGB", (64, 48), (255, 0, 0))] + [Image.new("RGB", (64, 48), (0, 0, i % 256)) for i in range(1, 3000)]
    data = bytearray(encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=10, loop=0))
    second = data.index(b"\x2c", data.index(b"\x2c") + 1)  # the second image descriptor
    data[second + 10:] = b"\xff" * (len(data) - second - 10)  # its data and every later frame: garbage
    img = decode_image(bytes(data))
    assert img.size == (64, 48) and np.all(np.asarray(img) == (255, 0, 0))


def test_error_is_a_value_error():
    assert issubclass(ImageInputError, ValueError)


# --- pixel formats ------------------------------------------------------------------------------


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (64, 48), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    img = decode_image(data)
    assert img.mode == "RGB" and img.size == (64, 48)
    assert np.all(np.asarray(img) == (255, 0, 0))


def test_16_bit_png_is_scaled_not_clipped():
    values = np.arange(256, dtype=np.uint16) * 257  # 0, 257, ..., 65535: exactly the 8-bit levels
    data = encode(Image.fromarray(np.tile(values, (8, 1))), "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"  # what Pillow calls a 16-bit gray PNG
    rgb = np.asarray(decode_image(data))
    np.testing.assert_array_equal(rgb[0, :, 0], np.arange(256))  # convert("L") would give 255 from 257 on
    assert (rgb == rgb[..., :1]).all()

    mid = encode(Image.fromarray(np.full((4, 4), 32768, np.uint16)), "PNG")
    assert np.asarray(decode_image(mid))[0, 0, 0] == 128


def test_floating_point_tiff_is_refused_by_name():
    data = encode(Image.fromarray(np.ones((4, 4), np.float32)), "TIFF")
    with pytest.raises(ImageInputError, match="Floating-point images are not supported"):
        decode_image(data)


def test_grayscale_becomes_three_equal_channels(chelsea):
    gray = chelsea.convert("L")
    rgb = np.asarray(decode_image(encode(gray, "PNG")))
    for c in range(3):
        np.testing.assert_array_equal(rgb[..., c], np.asarray(gray))


def test_bilevel_and_palette_images_decode(chelsea):
    for mode in ("1", "P"):
        img = decode_image(encode(chelsea.convert(mode), "PNG"))
        assert img.mode == "RGB" and img.size == chelsea.size


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_composited_on_white(mode):
    # Left: fully transparent black; middle: half transparent black; right: opaque black.
    alpha = np.array([[0, 128, 255]], np.uint8)
    rgba = np.zeros((1, 3, 4), np.uint8)
    rgba[..., 3] = alpha
    img = Image.fromarray(rgba, "RGBA").convert(mode)
    got = np.asarray(decode_image(encode(img, "PNG")))[0, :, 0]
    np.testing.assert_allclose(got, [255, 127, 0], atol=1)


def test_palette_transparency_is_composited_on_white():
    img = Image.new("P", (4, 1))
    img.putpalette([0, 0, 0, 200, 10, 10])  # index 0 black, index 1 red
    img.putdata([0, 1, 0, 1])
    data = encode(img, "PNG", transparency=0)
    np.testing.assert_array_equal(np.asarray(decode_image(data))[0], [[255] * 3, [200, 10, 10]] * 2)

    gif = decode_image(encode(img, "GIF", transparency=0))
    np.testing.assert_array_equal(np.asarray(gif)[0, 0], [255, 255, 255])


def test_cmyk_jpeg_becomes_rgb(chelsea):
    data = encode(chelsea.convert("CMYK"), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    img = decode_image(data)
    assert img.mode == "RGB"
    assert np.abs(np.asarray(img, np.float32) - np.asarray(chelsea, np.float32)).mean() < 4


@pytest.mark.parametrize("fmt", ["WEBP", "BMP", "TIFF"])
def test_other_accepted_formats(chelsea, fmt):
    data = encode(chelsea, fmt, lossless=True) if fmt == "WEBP" else encode(chelsea, fmt)
    np.testing.assert_array_equal(preprocess_bytes(data, SPEC), preprocess(chelsea, SPEC))


# --- EXIF orientation ---------------------------------------------------------------------------

# How to store an upright picture so that a viewer applying EXIF orientation N shows it upright.
STORED_AS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def with_orientation(img: Image.Image, orientation: int, fmt: str, **kwargs) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    return encode(img.transpose(STORED_AS[orientation]), fmt, exif=exif, **kwargs)


@pytest.mark.parametrize("orientation", sorted(STORED_AS))
def test_exif_orientation_gives_the_upright_tensor(chelsea, orientation):
    data = with_orientation(chelsea, orientation, "PNG")  # lossless, so the tensors must be identical
    assert decode_image(data).size == chelsea.size
    np.testing.assert_array_equal(preprocess_bytes(data, SPEC), preprocess_bytes(encode(chelsea, "PNG"), SPEC))


def test_exif_orientation_in_a_phone_style_jpeg(chelsea):
    rotated = with_orientation(chelsea, 6, "JPEG", quality=95)  # how phones store portrait shots
    upright = encode(chelsea, "JPEG", quality=95)
    assert decode_image(rotated).size == chelsea.size
    expected = preprocess_bytes(upright, SPEC)
    # JPEG compresses the rotated pixels a little differently; ignoring the tag would be off by ~1.
    assert np.abs(preprocess_bytes(rotated, SPEC) - expected).mean() < 0.05
    ignored = preprocess(Image.open(io.BytesIO(rotated)).convert("RGB"), SPEC)
    assert np.abs(ignored - expected).mean() > 0.5


def test_a_pixel_budget_is_shared_by_a_requests_images_and_closed_by_a_failure() -> None:
    small = encode(Image.new("RGB", (30, 30), (1, 2, 3)), "PNG")  # 900 pixels
    budget = PixelBudget(1000)
    assert preprocess_bytes(small, SPEC, budget=budget).shape == (3, 224, 224)
    with pytest.raises(ImageLimitError, match="more than 1000 pixels in all; the limit is 1000") as e:
        preprocess_bytes(small, SPEC, budget=budget)
    assert e.value.setting == "max_request_pixels"
    with pytest.raises(ImageInputError, match="another image of this request was refused"):
        preprocess_bytes(encode(Image.new("RGB", (1, 1)), "PNG"), SPEC, budget=budget)  # would fit, but the request failed


def _with_scans(data: bytes, extra: int) -> bytes:
    """``data`` (a progressive JPEG) with its last scan repeated ``extra`` more times."""
    sos = data.rindex(b"\xff\xda")
    eoi = data.rindex(b"\xff\xd9")
    return data[:eoi] + data[sos:eoi] * extra + data[eoi:]


def test_jpeg_scans_are_counted_from_the_structure(chelsea) -> None:
    progressive = encode(chelsea, "JPEG", progressive=True)
    assert jpeg_scans(encode(chelsea, "JPEG")) == 1
    assert jpeg_scans(progressive) == 10
    assert jpeg_scans(encode(chelsea.convert("L"), "JPEG", progressive=True)) == 6
    # A comment segment full of scan markers (like an EXIF thumbnail, another JPEG) is skipped by its length.
    comment = progressive[:200] * 50
    assert jpeg_scans(progressive[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + progressive[2:]) == 10
    assert jpeg_scans(_with_scans(progressive, 500)) == 101  # counting stops past the limit
    assert jpeg_scans(_with_scans(progressive, 5), stop_after=1000) == 15
    # libjpeg skips bytes between segments that are no marker (with a warning): so does the count.
    sos = progressive.index(b"\xff\xda")
    hidden = _with_scans(progressive[:sos] + b"junk\xff\x00" + progressive[sos:], 300)
    assert jpeg_scans(hidden, stop_after=1000) == 310
    with pytest.raises(ImageInputError, match="JPEG has more than 100 scans"):
        decode_image(hidden)


def test_a_jpeg_with_too_many_scans_is_refused_before_decoding(chelsea) -> None:
    # 451x300 pixels: the cap is 100 scans, below that the image decodes.
    progressive = encode(chelsea, "JPEG", progressive=True)
    assert decode_image(_with_scans(progressive, 90)).size == (451, 300)
    with pytest.raises(ImageInputError, match=r"^JPEG has more than 100 scans; at most 100 are accepted for a "
                                              r"451x300 image \(a progressive JPEG usually has about 10\)"):
        decode_image(_with_scans(progressive, 4000))
    big = encode(Image.new("RGB", (4096, 4096), (9, 9, 9)), "JPEG", progressive=True)  # the cap shrinks with size
    with pytest.raises(ImageInputError, match="more than 29 scans; at most 29 are accepted for a 4096x4096 image"):
        decode_image(_with_scans(big, 20))
