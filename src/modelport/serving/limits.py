"""What one request to an image model may cost: kept apart from the decoding code so that serving
tabular models never imports Pillow."""

from __future__ import annotations

from dataclasses import dataclass

# 64 images are 8 model calls at the default batch size, and their preprocessed tensors take 38 MB for
# a 224x224 model. 100M decoded pixels take about a second of one core to decode as PNG.
DEFAULT_MAX_IMAGES = 64
DEFAULT_MAX_REQUEST_PIXELS = 100_000_000


@dataclass(frozen=True)
class ImageLimits:
    """Per request; a field left as None takes the default (see ``resolved``)."""

    max_images: int | None = None
    max_request_pixels: int | None = None

    def resolved(self) -> ImageLimits:
        return ImageLimits(
            max_images=self.max_images if self.max_images is not None else DEFAULT_MAX_IMAGES,
            max_request_pixels=(self.max_request_pixels if self.max_request_pixels is not None
                                else DEFAULT_MAX_REQUEST_PIXELS))
