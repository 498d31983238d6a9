"""Decoding image files a request sends, within limits: the server checks them, plugins open them.

Only PNG, JPEG, WebP, GIF and BMP are opened (Pillow is told so, so no other decoder ever
sees the bytes). The dimensions are read from the header and checked before any pixel is
decoded, and the decoding itself runs with Pillow's decompression-bomb check raised to an
error. Every refusal is an `InvalidRequest` (400) naming `param`. Pillow is the only engine
this module touches.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import InvalidRequest
from .types import ImageInput

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = ["ImageLimits", "FORMATS", "inspect_image", "open_image"]

FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif", "BMP": "image/bmp"}


@dataclass(frozen=True)
class ImageLimits:
    """How large a decoded image may be: pixels in all, and pixels along either side."""

    max_pixels: int = 40_000_000
    max_side: int = 16384


def _decoded(data: bytes, limits: ImageLimits, param: str) -> Image:
    """The first frame of `data`, fully decoded, or a 400 saying what is wrong with it."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise InvalidRequest("the image is empty", param=param)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=list(FORMATS))
        except UnidentifiedImageError:
            raise InvalidRequest(f"the image is not a {', '.join(FORMATS)} file", param=param) from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise InvalidRequest(f"the image has too many pixels: at most {limits.max_pixels} are accepted",
                                 param=param) from None
        except Exception as exc:  # Pillow's parsers raise many kinds on hostile headers
            raise InvalidRequest(f"the image cannot be read: {type(exc).__name__}", param=param) from None
        width, height = image.size
        if width < 1 or height < 1 or max(width, height) > limits.max_side or width * height > limits.max_pixels:
            raise InvalidRequest(
                f"the image is {width}x{height} pixels; at most {limits.max_side} per side and "
                f"{limits.max_pixels} in all are accepted", param=param)
        try:
            image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise InvalidRequest("the image decompresses to too many pixels", param=param) from None
        except Exception as exc:  # truncated or corrupt data, in whatever form the decoder reports it
            raise InvalidRequest(f"the image is damaged: {exc}", param=param) from None
    return image


def inspect_image(data: bytes, limits: ImageLimits, *, param: str = "image_url",
                  detail: str = "auto") -> ImageInput:
    """The image `data` holds, decoded once to prove it is whole and within `limits`."""
    image = _decoded(data, limits, param)
    return ImageInput(data=data, mime=FORMATS[image.format or "PNG"], width=image.width, height=image.height,
                      detail=detail if detail in ("low", "high") else "auto")  # type: ignore[arg-type]


def open_image(image: ImageInput, limits: ImageLimits | None = None) -> Image:
    """The image as RGB pixels, for a vision model (decoded again, within the same limits)."""
    decoded = _decoded(image.data, limits or ImageLimits(), "image_url")
    return decoded if decoded.mode == "RGB" else decoded.convert("RGB")
