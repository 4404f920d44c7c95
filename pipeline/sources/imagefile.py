"""Decode any image file a user may point a source at into uint8 pixels.

Every source goes through `decode_image`, so the rules live in one place:

- colour images become HxWx3 RGB; grayscale stays single-channel HxWx1
  (stages that need colour stack it themselves; silently tripling gray
  medical scans would hide what the data is);
- alpha (RGBA, LA, palette transparency) is composited on white, the
  convention of viewers and of most image-classification datasets;
- CMYK, YCbCr, HSV, palette and 1-bit images are converted by Pillow;
- 16-bit images are scaled to 8 bits with value / 257 (65535 -> 255),
  float images by their [0, 1] or min..max range;
- EXIF orientation is applied, so pixels look the way viewers show them;
- an animated file yields its first frame;
- an image larger than `max_pixels` is refused before its pixels are
  decoded (`oversize: refuse`, the default), or decoded and downscaled with
  area averaging to fit `max_pixels` (`oversize: downscale`, up to
  DOWNSCALE_LIMIT pixels, a note records both sizes); anything Pillow cannot
  decode (corrupt, truncated, empty, not an image) raises `SourceError`
  naming the file and the reason.

Each conversion adds a human-readable note; the notes go into the sample's
provenance so a reader knows what was done to the file.
"""

from __future__ import annotations

import io
import warnings
from typing import Annotated, Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import Field

from pipeline.sources.base import SourceError

# Sized for 24 GB workers: a task holds a shard's decoded images and their shifted copies, so
# 100 samples per shard x 40 MP x 3 bytes x 2 = 24 GB. Configurable per source (`max_pixels`).
MAX_PIXELS = 40_000_000
# `oversize: downscale` still refuses beyond Pillow's hard decompression-bomb limit (~179 MP):
# the full image is decoded once before it is reduced.
DOWNSCALE_LIMIT = 2 * (Image.MAX_IMAGE_PIXELS or 89_478_485)
OVERSIZE_POLICIES = ("refuse", "downscale")


# the decode settings of every source of encoded images: `max_pixels: MaxPixels = MAX_PIXELS`,
# `oversize: Oversize = "refuse"`
MaxPixels = Annotated[int, Field(ge=1, description="most pixels per image (default sized for 24 GB workers); "
                                                   "see oversize")]
Oversize = Annotated[Literal["refuse", "downscale"], Field(
    description="an image over max_pixels: refuse it (an error row with the reason) or downscale it to fit "
                "(area averaging; a note in its provenance; at most ~179 MP decoded)")]

# Raster formats a dataset may hold. Leaving out the rest is deliberate: EPS would
# run Ghostscript on untrusted input, and exotic formats only widen the attack surface.
DECODABLE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "DIB", "TIFF", "WEBP", "PPM", "PCX", "TGA", "ICO",
                     "JPEG2000", "SGI", "QOI", "AVIF", "DDS", "PSD")

_EXIF_ORIENTATION_TAG = 0x0112
_EXIF_ORIENTATION_NAMES = {
    2: "mirrored horizontally", 3: "rotated 180°", 4: "mirrored vertically",
    5: "transposed", 6: "rotated 90° clockwise", 7: "transversed", 8: "rotated 90° counter-clockwise",
}
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def decode_image(data: bytes, name: str, max_pixels: int = MAX_PIXELS,
                 oversize: str = "refuse") -> tuple[np.ndarray, list[str]]:
    """Pixels (uint8, C-contiguous, HxWx3 or HxWx1) and the notes of every conversion applied.

    Raises `SourceError("cannot decode <name>: <why>")` for anything that is not a
    decodable image within `max_pixels` (with `oversize="downscale"`: within DOWNSCALE_LIMIT,
    then reduced to fit `max_pixels`).
    """
    if not data:
        raise SourceError(f"cannot decode {name}: empty file (0 bytes)")
    notes: list[str] = []
    try:
        limit = max(max_pixels, DOWNSCALE_LIMIT) if oversize == "downscale" else max_pixels
        image = _open_checked(data, name, limit)
        image = _first_frame(image, notes)
        _note_high_bit_depth(image, notes)      # the tile list that tells is gone after load()
        image.load()
        image = _apply_exif_orientation(image, notes)
        pixels = _fit_pixels(_to_uint8_array(image, notes), max_pixels, notes)
    except SourceError:
        raise
    except UnidentifiedImageError:
        raise SourceError(f"cannot decode {name}: not a recognised image format "
                          f"({len(data)} bytes starting {data[:8]!r})") from None
    except Exception as exc:
        # Pillow reports truncation/corruption as OSError, bad headers as SyntaxError/ValueError,
        # and a hostile file can trip struct.error, IndexError...: all of them mean "bad item"
        raise SourceError(f"cannot decode {name}: {_describe_failure(exc)}") from None
    return pixels, notes


def _open_checked(data: bytes, name: str, max_pixels: int) -> Image.Image:
    """Open (header only) and refuse oversized images before any pixel is decoded."""
    with warnings.catch_warnings():
        # our own limit below replaces Pillow's warning; its hard error (2x its limit) still applies
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=DECODABLE_FORMATS)
        except Image.DecompressionBombError:
            limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
            raise SourceError(f"cannot decode {name}: image claims more than {limit:,} pixels "
                              "(decompression bomb guard)") from None
    width, height = image.size
    if width * height > max_pixels:
        raise SourceError(f"cannot decode {name}: image claims {width}x{height} = {width * height:,} pixels, "
                          f"over the limit of {max_pixels:,} (decompression bomb guard; raise max_pixels "
                          "if the file is trusted, or set oversize: downscale)")
    if width == 0 or height == 0:
        raise SourceError(f"cannot decode {name}: image has no pixels ({width}x{height})")
    return image


def _fit_pixels(pixels: np.ndarray, max_pixels: int, notes: list[str]) -> np.ndarray:
    """Downscale (area averaging, aspect kept) so that height x width <= max_pixels."""
    height, width = pixels.shape[:2]
    if height * width <= max_pixels:
        return pixels
    import cv2

    scale = (max_pixels / (height * width)) ** 0.5
    new_h, new_w = max(1, int(height * scale)), max(1, int(width * scale))
    small = cv2.resize(pixels, (new_w, new_h), interpolation=cv2.INTER_AREA)
    notes.append(f"downscaled from {width}x{height} to {new_w}x{new_h} (area averaging) to fit "
                 f"max_pixels {max_pixels:,}")
    return _contiguous(small.reshape(new_h, new_w, pixels.shape[2]))


def _first_frame(image: Image.Image, notes: list[str]) -> Image.Image:
    # is_animated stops at the second frame; n_frames would walk the whole file
    if getattr(image, "is_animated", False):
        image.seek(0)
        kind = "multi-frame" if image.format in ("MPO", "TIFF") else "animated"
        notes.append(f"{kind} {image.format}: first frame used")
    return image


def _apply_exif_orientation(image: Image.Image, notes: list[str]) -> Image.Image:
    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION_TAG)
    except Exception:
        # broken EXIF does not make the pixels unusable
        notes.append("EXIF block unreadable: orientation not applied")
        return image
    if orientation not in _EXIF_ORIENTATION_NAMES:
        return image
    transposed = ImageOps.exif_transpose(image)
    notes.append(f"EXIF orientation {orientation} applied ({_EXIF_ORIENTATION_NAMES[orientation]})")
    return transposed


def _to_uint8_array(image: Image.Image, notes: list[str]) -> np.ndarray:
    mode = image.mode
    if mode == "RGB":
        return _contiguous(np.asarray(image))
    if mode == "L":
        return _contiguous(np.asarray(image)[:, :, None])
    if mode in _SIXTEEN_BIT_MODES or mode == "I":
        return _integer_to_uint8(np.asarray(image), mode, notes)
    if mode == "F":
        return _float_to_uint8(np.asarray(image), notes)
    if mode == "1":
        notes.append("1-bit image expanded to 8-bit grayscale (0/255)")
        return _contiguous(np.asarray(image.convert("L"))[:, :, None])
    if (mode == "P" and "transparency" in image.info) or mode == "PA":
        notes.append(f"palette image with transparency ({mode}) composited on white")
        return _composite_on_white(image.convert("RGBA"))
    if mode in _ALPHA_MODES:
        notes.append(f"alpha channel of {mode} image composited on white")
        return _composite_on_white(image)
    if mode == "P":
        notes.append("palette image converted to RGB")
        return _contiguous(np.asarray(image.convert("RGB")))
    try:
        rgb = image.convert("RGB")
    except ValueError:
        raise ValueError(f"unsupported image mode {mode}") from None
    profile_note = " (no colour profile applied)" if mode == "CMYK" else ""
    notes.append(f"{mode} image converted to RGB{profile_note}")
    return _contiguous(np.asarray(rgb))


def _note_high_bit_depth(image: Image.Image, notes: list[str]) -> None:
    # Pillow reads 16-bit-per-channel colour PNGs as 8-bit RGB(A), keeping the high byte
    tile = getattr(image, "tile", None)
    rawmode = tile[0].args if tile else None
    if image.mode in ("RGB", "RGBA") and isinstance(rawmode, str) and rawmode.endswith(";16B"):
        notes.append(f"16-bit-per-channel {image.mode} reduced to 8 bits (high byte)")


def _integer_to_uint8(values: np.ndarray, mode: str, notes: list[str]) -> np.ndarray:
    values = values.astype(np.int64)
    low, high = int(values.min()), int(values.max())
    if 0 <= low and high <= 65535:
        scaled = (values * 255 + 32767) // 65535   # == round(v / 257)
        depth = "32-bit integer" if mode == "I" else "16-bit"
        notes.append(f"{depth} grayscale scaled to 8 bits (value / 257)")
    else:
        scaled = _stretch(values.astype(np.float64), low, high)
        notes.append(f"32-bit integer grayscale with range {low}..{high} stretched to 0..255")
    return _contiguous(scaled.astype(np.uint8)[:, :, None])


def _float_to_uint8(values: np.ndarray, notes: list[str]) -> np.ndarray:
    finite = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(finite.min()), float(finite.max())
    if 0.0 <= low and high <= 1.0:
        scaled = np.rint(finite * 255.0)
        notes.append("floating-point grayscale in [0, 1] scaled to 0..255")
    else:
        scaled = _stretch(finite, low, high)
        notes.append(f"floating-point grayscale with range {low:g}..{high:g} stretched to 0..255")
    return _contiguous(scaled.astype(np.uint8)[:, :, None])


def _stretch(values: np.ndarray, low: float, high: float) -> np.ndarray:
    if high <= low:
        return np.zeros_like(values)
    return np.rint((values - low) * (255.0 / (high - low)))


def _composite_on_white(image: Image.Image) -> np.ndarray:
    rgba = image if image.mode in ("RGBA", "LA") else image.convert("RGBA" if image.mode != "La" else "LA")
    values = np.asarray(rgba).astype(np.uint16)
    colour, alpha = values[:, :, :-1], values[:, :, -1:]
    # out = c * a + 255 * (1 - a), in integers with rounding
    blended = (colour * alpha + 255 * (255 - alpha) + 127) // 255
    return _contiguous(blended.astype(np.uint8))


def _contiguous(pixels: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(pixels, dtype=np.uint8)


def _describe_failure(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if not isinstance(exc, (OSError, ValueError, SyntaxError)):
        text = f"{type(exc).__name__}: {text}"
    return text
