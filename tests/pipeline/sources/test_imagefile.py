"""decode_image on a corpus of awkward files, all generated here."""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from pipeline.sources import SourceError
from pipeline.sources.imagefile import decode_image


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def gradient_rgb(height: int = 32, width: int = 48) -> np.ndarray:
    rows = np.linspace(0, 255, height, dtype=np.uint8)[:, None, None]
    cols = np.linspace(0, 255, width, dtype=np.uint8)[None, :, None]
    return np.concatenate(np.broadcast_arrays(rows, cols, np.full_like(rows, 80)), axis=2)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_header_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb's calling card)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
            + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + png_chunk(b"IEND", b""))


def test_rgb_png_round_trips_without_notes():
    pixels = gradient_rgb()
    decoded, notes = decode_image(encode(Image.fromarray(pixels), "PNG"), "a.png")
    assert decoded.dtype == np.uint8 and decoded.flags.c_contiguous
    np.testing.assert_array_equal(decoded, pixels)
    assert notes == []


def test_grayscale_stays_single_channel():
    gray = gradient_rgb()[:, :, 0]
    decoded, notes = decode_image(encode(Image.fromarray(gray), "PNG"), "g.png")
    assert decoded.shape == (32, 48, 1)
    np.testing.assert_array_equal(decoded[:, :, 0], gray)
    assert notes == []


def test_cmyk_jpeg_becomes_rgb_with_note():
    cmyk = Image.new("CMYK", (40, 40), (0, 255, 255, 0))     # pure red in CMYK
    decoded, notes = decode_image(encode(cmyk, "JPEG", quality=95), "cmyk.jpg")
    assert decoded.shape == (40, 40, 3)
    mean = decoded.reshape(-1, 3).mean(axis=0)
    assert mean[0] > 240 and mean[1] < 15 and mean[2] < 15
    assert notes == ["CMYK image converted to RGB (no colour profile applied)"]


def test_sixteen_bit_png_scaled_by_257():
    values = np.array([[0, 257 * 100, 65535, 128]] * 4, dtype=np.uint16)
    decoded, notes = decode_image(encode(Image.fromarray(values), "PNG"), "deep.png")
    assert decoded.shape == (4, 4, 1)
    assert decoded[0, :, 0].tolist() == [0, 100, 255, 0]
    assert notes == ["16-bit grayscale scaled to 8 bits (value / 257)"]


def test_sixteen_bit_colour_png_keeps_high_byte_with_note():
    import cv2

    values = np.zeros((4, 4, 3), dtype=np.uint16)
    values[..., 2] = 0xAB00 + 0x7F           # cv2 writes BGR: this is the red channel
    ok, encoded = cv2.imencode(".png", values)
    decoded, notes = decode_image(encoded.tobytes(), "deep-rgb.png")
    assert ok and decoded.shape == (4, 4, 3) and (decoded[..., 0] == 0xAB).all()
    assert notes == ["16-bit-per-channel RGB reduced to 8 bits (high byte)"]


def test_palette_with_transparency_composited_on_white():
    palette_image = Image.new("P", (16, 16), 1)
    palette_image.putpalette([0, 0, 0, 200, 30, 30] + [0] * 762)
    palette_image.paste(0, (0, 0, 8, 16))                    # left half: index 0, transparent
    decoded, notes = decode_image(encode(palette_image, "PNG", transparency=0), "pal.png")
    assert decoded.shape == (16, 16, 3)
    assert (decoded[:, :8] == 255).all()
    assert (decoded[:, 8:] == [200, 30, 30]).all()
    assert notes == ["palette image with transparency (P) composited on white"]


def test_rgba_half_transparent_blends_with_white():
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[...] = (255, 0, 0, 128)
    rgba[:4, :, 3] = 255
    decoded, notes = decode_image(encode(Image.fromarray(rgba), "PNG"), "rgba.png")
    assert decoded[0, 0].tolist() == [255, 0, 0]
    assert decoded[7, 7].tolist() == [255, 127, 127]
    assert notes == ["alpha channel of RGBA image composited on white"]


def test_gray_with_alpha_stays_gray():
    la = Image.fromarray(np.dstack([np.full((6, 6), 100, np.uint8), np.zeros((6, 6), np.uint8)]), "LA")
    decoded, notes = decode_image(encode(la, "PNG"), "la.png")
    assert decoded.shape == (6, 6, 1) and (decoded == 255).all()
    assert "alpha" in notes[0]


def test_one_bit_expands_to_0_and_255():
    bits = Image.new("1", (10, 10), 0)
    bits.paste(1, (0, 0, 5, 10))
    decoded, notes = decode_image(encode(bits, "PNG"), "bits.png")
    assert decoded.shape == (10, 10, 1)
    assert set(np.unique(decoded).tolist()) == {0, 255} and decoded[0, 0, 0] == 255
    assert notes == ["1-bit image expanded to 8-bit grayscale (0/255)"]


def test_animated_gif_yields_first_frame():
    frames = [Image.new("RGB", (12, 12), colour) for colour in ((250, 0, 0), (0, 0, 250))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    decoded, notes = decode_image(data, "anim.gif")
    assert decoded.shape == (12, 12, 3)
    assert decoded[..., 0].mean() > 200 and decoded[..., 2].mean() < 30
    assert notes == ["animated GIF: first frame used", "palette image converted to RGB"]


def test_exif_orientation_6_rotates_clockwise():
    pixels = np.zeros((32, 48, 3), dtype=np.uint8)
    pixels[:16, :24] = 255                               # bright top-left quadrant as stored
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(Image.fromarray(pixels), "JPEG", quality=95, exif=exif.tobytes())
    decoded, notes = decode_image(data, "phone.jpg")
    assert decoded.shape == (48, 32, 3)                  # displayed portrait
    expected = np.rot90(pixels, k=-1)                    # 90° clockwise: top-left -> top-right
    assert np.abs(decoded.astype(int) - expected.astype(int)).mean() < 4
    assert decoded[:24, 16:].mean() > 240 and decoded[:24, :16].mean() < 15
    assert notes == ["EXIF orientation 6 applied (rotated 90° clockwise)"]


def test_float_tiff_in_unit_range_scaled():
    values = np.array([[0.0, 0.5, 1.0]], dtype=np.float32).repeat(3, axis=0)
    decoded, notes = decode_image(encode(Image.fromarray(values, "F"), "TIFF"), "f.tif")
    assert decoded[0, :, 0].tolist() == [0, 128, 255]
    assert notes == ["floating-point grayscale in [0, 1] scaled to 0..255"]


def test_header_claiming_ten_gigapixels_is_refused():
    with pytest.raises(SourceError, match=r"cannot decode bomb\.png: .*decompression bomb guard"):
        decode_image(png_header_claiming(100_000, 100_000), "bomb.png")


def test_bomb_between_pillow_limits_refused_without_pillow_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(SourceError, match=r"20000x5000 = 100,000,000 pixels, over the limit"):
            decode_image(png_header_claiming(20_000, 5_000), "big.png")


def test_max_pixels_is_configurable():
    data = encode(Image.fromarray(gradient_rgb()), "PNG")
    with pytest.raises(SourceError, match=r"48x32 = 1,536 pixels, over the limit of 1,000"):
        decode_image(data, "small.png", max_pixels=1000)
    assert decode_image(data, "small.png", max_pixels=1536)[0].shape == (32, 48, 3)


@pytest.mark.parametrize(("make_bytes", "reason"), [
    (lambda good: b"", r"empty file \(0 bytes\)"),
    (lambda good: b"this is a text file, not a JPEG\n", r"not a recognised image format"),
    (lambda good: good[: len(good) // 2], r"image file is truncated"),
    # EPS would make Pillow run Ghostscript: refused as a format
    (lambda good: b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n", r"not a recognised image format"),
    (lambda good: good[:200] + bytes(b ^ 0x5A for b in good[200:600]) + good[600:],
     r"broken data stream when reading image file$"),
])
def test_unusable_files_raise_source_error_with_reason(make_bytes, reason):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    good = encode(Image.fromarray(noise), "JPEG", quality=90)
    with pytest.raises(SourceError, match=r"^cannot decode bad\.jpg: " + reason):
        decode_image(make_bytes(good), "bad.jpg")


def test_corrupt_png_data_raises():
    good = encode(Image.fromarray(gradient_rgb()), "PNG")
    idat = good.index(b"IDAT") + 8
    broken = good[:idat] + b"\xff" * 40 + good[idat + 40:]
    with pytest.raises(SourceError, match=r"^cannot decode c\.png: "):
        decode_image(broken, "c.png")
