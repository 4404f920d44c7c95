"""Vectorised corruption primitives (ImageNet-C family).

Every function takes a float32 image in [0, 1] shaped HxWxC and *raw*
parameters (a noise sigma, a blur radius; never a severity level), draws any
randomness from the explicit `rng`, and returns a new float32 HxWxC image
clipped to [0, 1]. C may be 1 or 3 unless the operation is about colour.
The severity tables live in `catalogue.py`.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from PIL import Image

from stages.corruptions.poisson import level_table, poisson_levels, poisson_levels_supported
from stages.corruptions.textures import frost_texture, plasma_fractal

LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601, as OpenCV's RGB2GRAY


def _finish(out: np.ndarray, like: np.ndarray) -> np.ndarray:
    """Restore the channel axis OpenCV drops for C=1 and clip to [0, 1]."""
    out = np.asarray(out, dtype=np.float32).reshape(like.shape)
    return np.clip(out, 0.0, 1.0, out=out)


def _need_rgb(x: np.ndarray, op: str) -> None:
    if x.ndim != 3 or x.shape[2] != 3:
        raise ValueError(f"{op} works in HSV colour space and needs an HxWx3 image, got shape {x.shape}")


def _gray(x: np.ndarray) -> np.ndarray:
    """HxW luminance of an HxWx1 or HxWx3 image."""
    return x[..., 0] if x.shape[2] == 1 else x @ LUMA


def _gaussian_ksize(sigma: float, truncate: float) -> int:
    """Odd kernel width reaching `truncate` sigmas, as scipy.ndimage does."""
    return 2 * int(truncate * sigma + 0.5) + 1


# --- noise -----------------------------------------------------------------------------------------


def gaussian_noise(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return _finish(x + sigma * rng.standard_normal(x.shape, dtype=np.float32), x)


def shot_noise(x: np.ndarray, lam: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson photon noise: `lam` photons at full intensity.

    8-bit images (every value v/255 up to float32 rounding) are sampled per
    grey level from tabulated inverse CDFs, one uniform per pixel; the law is
    the same as NumPy's sampler, which handles any other input.
    """
    levels = _grey_levels(x)
    if levels is None or not poisson_levels_supported(lam):
        return _finish(rng.poisson(x * lam) / lam, x)
    return _finish(_photon_fractions(lam)[poisson_levels(levels, lam, rng)], x)


def shot_noise_pixels(pixels: np.ndarray, lam: float, rng: np.random.Generator) -> np.ndarray:
    """`shot_noise` on uint8: the same draws from `rng`, the same uint8 result as
    `to_uint8(shot_noise(pixels / 255, ...))`, without the float image."""
    if pixels.dtype != np.uint8:
        raise ValueError(f"shot_noise_pixels needs uint8 pixels, got {pixels.dtype}")
    if not poisson_levels_supported(lam):
        return to_uint8(shot_noise(np.multiply(pixels, np.float32(1 / 255), dtype=np.float32), lam, rng))
    return to_uint8(_photon_fractions(lam))[poisson_levels(pixels, lam, rng)]


def _photon_fractions(lam: float) -> np.ndarray:
    """k/λ as float32 for every photon count k the level tables of λ can draw."""
    return (np.arange(level_table(float(lam)).largest + 1) / lam).astype(np.float32)


_GREY_LEVELS = np.arange(256, dtype=np.float32) / np.float32(255)


def _grey_levels(x: np.ndarray) -> np.ndarray | None:
    """uint8 v with x == v/255 to within float32 rounding (1.2e-7) everywhere, else None."""
    if x.dtype not in (np.float32, np.float64) or x.size == 0 or x.ndim > 3:
        return None
    levels = cv2.convertScaleAbs(x, alpha=255.0).reshape(x.shape)  # rounds, saturates
    if cv2.norm(_GREY_LEVELS[levels].astype(x.dtype, copy=False), x, cv2.NORM_INF) > 1.2e-7:
        return None
    return levels


def impulse_noise(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Salt and pepper: each value independently becomes 0 or 1 (equally likely) with prob `amount`."""
    u = rng.random(x.shape, dtype=np.float32)
    out = x.copy()
    out[u < amount / 2] = 1.0
    out[(u >= amount / 2) & (u < amount)] = 0.0
    return _finish(out, x)


def speckle_noise(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Multiplicative noise x + x·N(0, sigma)."""
    return _finish(x + x * (sigma * rng.standard_normal(x.shape, dtype=np.float32)), x)


# --- blur ------------------------------------------------------------------------------------------


def gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur truncated at 4 sigma with edge replication (scipy's defaults)."""
    k = _gaussian_ksize(sigma, 4.0)
    return _finish(cv2.GaussianBlur(x, (k, k), sigma, borderType=cv2.BORDER_REPLICATE), x)


def disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """Normalised aliased disk, softened by a small Gaussian (17x17 up to radius 8)."""
    half = 8 if radius <= 8 else int(radius)
    coords = np.arange(-half, half + 1, dtype=np.float32)
    disk = (coords[None, :] ** 2 + coords[:, None] ** 2 <= radius**2).astype(np.float32)
    disk /= disk.sum()
    soften = (3, 3) if radius <= 8 else (5, 5)
    return cv2.GaussianBlur(disk, soften, alias_blur)


def defocus_blur(x: np.ndarray, radius: float, alias_blur: float) -> np.ndarray:
    return _finish(cv2.filter2D(x, -1, disk_kernel(radius, alias_blur)), x)


def motion_taps(radius: int, sigma: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel offsets (dy, dx) and weights of a one-sided Gaussian streak at `angle` degrees.

    Tap i sits i pixels along the direction, rounded half-down, weighted
    exp(-i²/2σ²); 2·radius+1 taps, weights summing to one.
    """
    steps = np.arange(2 * radius + 1, dtype=np.float64)
    weights = np.exp(-(steps**2) / (2 * sigma**2))
    theta = np.deg2rad(angle)
    dy = np.ceil(steps * np.sin(theta) - 0.5).astype(int)
    dx = np.ceil(steps * np.cos(theta) - 0.5).astype(int)
    return np.stack([dy, dx], axis=1), (weights / weights.sum()).astype(np.float32)


def motion_blur(x: np.ndarray, radius: int, sigma: float, angle: float) -> np.ndarray:
    """Average of the image shifted along a streak; edges replicate."""
    offsets, weights = motion_taps(int(radius), sigma, angle)
    h, w = x.shape[:2]
    pad = int(np.abs(offsets).max())
    padded = cv2.copyMakeBorder(x, pad, pad, pad, pad, cv2.BORDER_REPLICATE).reshape(
        h + 2 * pad, w + 2 * pad, -1)
    out = np.zeros((h, w, padded.shape[2]), np.float32)
    for (dy, dx), weight in zip(offsets, weights):
        out += weight * padded[pad + dy:pad + dy + h, pad + dx:pad + dx + w]
    return _finish(out, x)


def _centre_zoom(x: np.ndarray, zoom: float, border: int = cv2.BORDER_REPLICATE) -> np.ndarray:
    """Magnify the centre by `zoom` keeping the size (bilinear).

    Same geometry as cropping ceil(side/zoom) pixels about the centre, resizing
    that crop by `zoom` with corner-aligned linear interpolation and trimming
    the result back to the original size.
    """
    h, w = x.shape[:2]
    matrix = np.zeros((2, 3), np.float64)
    for axis, side in enumerate((w, h)):
        crop = int(np.ceil(side / zoom))
        start = (side - crop) // 2
        zoomed = int(round(crop * zoom))
        trim = (zoomed - side) // 2
        scale = (crop - 1) / (zoomed - 1)
        matrix[axis, axis] = scale
        matrix[axis, 2] = start + trim * scale
    out = cv2.warpAffine(x, matrix, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=border)
    return out.reshape(x.shape)


def zoom_blur(x: np.ndarray, zooms) -> np.ndarray:
    """Mean of the image and its centre zooms by each factor in `zooms`."""
    out = x.astype(np.float32, copy=True)
    for zoom in zooms:
        out += _centre_zoom(x, float(zoom))
    return _finish(out / (len(zooms) + 1), x)


def glass_shuffle(h: int, w: int, max_delta: int, iterations: int, rng: np.random.Generator) -> np.ndarray:
    """Flat source index of every pixel after a local pixel shuffle.

    Each pass visits the interior pixels bottom-right to top-left and gives
    each the pixel of a neighbour offset by U{-max_delta .. max_delta-1} per
    axis. The reference writes a swap, `x[h, w], x[h', w'] = x[h', w'], x[h, w]`,
    but on an HxWx3 array both right-hand sides are views, so the neighbour's
    pixel is copied and the neighbour keeps it: pixels are duplicated, not
    exchanged, and that is what ImageNet-C was made with. Two visits whose
    windows overlap must keep their order; visits on the wavefront
    (w - x) + 2·max_delta·(h - y) never overlap and every overlapping earlier
    visit lies on an earlier wavefront, so running one wavefront per
    vectorised step gives exactly the sequential result.
    """
    d = int(max_delta)
    ys, xs = np.mgrid[d + 1:h - d + 1, d + 1:w - d + 1]
    wavefront = ((w - xs) + 2 * d * (h - ys)).ravel()
    order = np.argsort(wavefront, kind="stable")
    cuts = np.flatnonzero(np.diff(wavefront[order])) + 1
    visits = (ys * w + xs).ravel()[order]
    source = np.arange(h * w)
    for _ in range(iterations):
        dy, dx = rng.integers(-d, d, size=(2, visits.size))
        partners = visits + dy * w + dx
        for here, there in zip(np.split(visits, cuts), np.split(partners, cuts)):
            source[here] = source[there]
    return source.reshape(h, w)


def glass_blur(x: np.ndarray, sigma: float, max_delta: int, iterations: int,
               rng: np.random.Generator) -> np.ndarray:
    """Blur, shuffle pixels locally, blur again (frosted glass)."""
    blurred = gaussian_blur(x, sigma)
    source = glass_shuffle(x.shape[0], x.shape[1], max_delta, iterations, rng)
    shuffled = blurred.reshape(-1, x.shape[2])[source]
    return gaussian_blur(shuffled, sigma)


# --- digital ---------------------------------------------------------------------------------------


def pixelate(x: np.ndarray, factor: float) -> np.ndarray:
    """Box-average down by `factor`, then back up (box sampling = nearest neighbour when enlarging).

    Float images use OpenCV's area weights, which at non-integer ratios split
    border pixels by coverage; uint8 images (`pixelate_pixels`) reproduce the
    reference exactly."""
    return _finish(pixelate_pixels(x, factor), x)


def pixelate_pixels(pixels: np.ndarray, factor: float, enlarge: str = "nearest") -> np.ndarray:
    """`pixelate` keeping dtype and shape. uint8 images shrink with Pillow's BOX resampling, as
    imagecorruptions and medmnistc do: at a non-integer ratio Pillow averages the whole source
    pixels whose centres fall in each output pixel's box (not coverage-weighted fractions), in
    22-bit fixed point, one axis after the other. They enlarge back with Pillow's NEAREST
    (imagecorruptions) or BOX (`enlarge="box"`, medmnistc), which pick different pixels where a
    box edge falls on a source pixel's centre."""
    h, w = pixels.shape[:2]
    small_size = (max(1, int(w * factor)), max(1, int(h * factor)))
    if pixels.dtype == np.uint8 and (pixels.ndim == 2 or pixels.shape[2] in (1, 3)):
        image = Image.fromarray(pixels.reshape(h, w) if pixels.ndim == 2 or pixels.shape[2] == 1 else pixels)
        back = Image.BOX if enlarge == "box" else Image.NEAREST
        return np.asarray(image.resize(small_size, Image.BOX).resize((w, h), back)).reshape(pixels.shape)
    small = cv2.resize(pixels, small_size, interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST_EXACT).reshape(pixels.shape)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """[0, 1] float to uint8, rounding to nearest."""
    return cv2.convertScaleAbs(np.clip(x, 0.0, 1.0), alpha=255.0).reshape(x.shape)


def jpeg(x: np.ndarray, quality: int) -> np.ndarray:
    """Round trip through baseline JPEG (4:2:0 chroma) at `quality`."""
    return _finish(jpeg_pixels(to_uint8(x), quality).astype(np.float32) / 255.0, x)


def jpeg_pixels(pixels: np.ndarray, quality: int) -> np.ndarray:
    """`jpeg` on a uint8 HxWx1 or HxWx3 RGB image."""
    colour = pixels.shape[2] == 3
    encoded_from = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR) if colour else pixels
    ok, encoded = cv2.imencode(".jpg", encoded_from, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError(f"JPEG encoding at quality {quality} failed")
    if colour:
        return cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE).reshape(pixels.shape)


def brightness(x: np.ndarray, delta: float) -> np.ndarray:
    """Add `delta` to HSV value (to the intensity when C=1).

    With hue and saturation fixed, every RGB channel is proportional to V, so
    the HSV round trip reduces to scaling by V'/V; black (V=0, S=0) becomes grey.
    """
    if x.shape[2] == 1:
        return _finish(x + delta, x)
    value = x.max(axis=2, keepdims=True)
    new_value = np.minimum(value + delta, 1.0)
    scale = np.divide(new_value, value, out=np.zeros_like(value), where=value > 0)
    return _finish(np.where(value > 0, x * scale, new_value), x)


def contrast(x: np.ndarray, factor: float) -> np.ndarray:
    """Scale each channel's deviation from its mean by `factor`."""
    means = x.mean(axis=(0, 1), keepdims=True, dtype=np.float64).astype(np.float32)
    return _finish((x - means) * factor + means, x)


def contrast_pixels(pixels: np.ndarray, factor: float) -> np.ndarray:
    """`contrast` on uint8: the same formula tabulated per channel for all 256 levels."""
    means = np.array(cv2.mean(pixels)[:pixels.shape[2]], np.float32) / 255.0
    levels = np.arange(256, dtype=np.float32)[:, None] / 255.0
    tables = to_uint8((levels - means) * factor + means)  # 256 x C
    return cv2.LUT(pixels, tables.reshape(1, 256, pixels.shape[2])).reshape(pixels.shape)


def saturate(x: np.ndarray, scale: float, shift: float) -> np.ndarray:
    """Set HSV saturation S to clip(S·scale + shift) keeping hue and value.

    Each channel is V − S·V·t(hue), so a new saturation rescales the distance
    of every channel from V. Grey pixels have hue 0 (red) by the usual
    convention, so a positive `shift` tints them red.
    """
    _need_rgb(x, "saturate")
    value = x.max(axis=2, keepdims=True)
    chroma = value - x.min(axis=2, keepdims=True)
    saturation = np.divide(chroma, value, out=np.zeros_like(value), where=value > 0)
    new_saturation = np.clip(saturation * scale + shift, 0.0, 1.0)
    ratio = np.divide(new_saturation, saturation, out=np.zeros_like(value), where=chroma > 0)
    coloured = value - ratio * (value - x)
    grey = value - value * new_saturation * np.array([0.0, 1.0, 1.0], np.float32)
    return _finish(np.where(chroma > 0, coloured, grey), x)


def elastic_transform(x: np.ndarray, alpha: float, sigma, max_shift: float,
                      rng: np.random.Generator) -> np.ndarray:
    """Displace pixels by a smooth random field and resample bilinearly.

    The field is uniform noise in ±max_shift, Gaussian-smoothed with `sigma`
    (scalar, or per axis (sigma_y, sigma_x), truncated at 3 sigma), times `alpha`.
    """
    h, w = x.shape[:2]
    sigma_y, sigma_x = (sigma, sigma) if np.isscalar(sigma) else sigma
    ksize = (_gaussian_ksize(sigma_x, 3.0), _gaussian_ksize(sigma_y, 3.0))

    def field() -> np.ndarray:
        noise = rng.uniform(-max_shift, max_shift, size=(h, w)).astype(np.float32)
        return cv2.GaussianBlur(noise, ksize, sigma_x, sigmaY=sigma_y, borderType=cv2.BORDER_REFLECT) * alpha

    dx, dy = field(), field()
    rows, cols = np.indices((h, w), dtype=np.float32)
    out = cv2.remap(x, cols + dx, rows + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return _finish(out, x)


# --- weather ---------------------------------------------------------------------------------------


def fog(x: np.ndarray, strength: float, wibble_decay: float, rng: np.random.Generator) -> np.ndarray:
    """Add a plasma-fractal haze, then rescale so the brightest input maps below 1."""
    h, w = x.shape[:2]
    size = 1 << max(1, math.ceil(math.log2(max(h, w))))
    haze = plasma_fractal(size, wibble_decay, rng)[:h, :w, None].astype(np.float32)
    peak = float(x.max())
    return _finish((x + strength * haze) * (peak / (peak + strength)), x)


def frost(x: np.ndarray, image_weight: float, frost_weight: float, rng: np.random.Generator) -> np.ndarray:
    """Blend with a synthesised ice-crystal texture: image_weight·x + frost_weight·frost."""
    texture = frost_texture(x.shape[0], x.shape[1], rng)
    if x.shape[2] == 1:
        texture = (texture @ LUMA)[..., None]
    return _finish(image_weight * x + frost_weight * texture, x)


def snow(x: np.ndarray, loc: float, scale: float, zoom: float, threshold: float, blur_radius: int,
         blur_sigma: float, blend: float, angle: float, rng: np.random.Generator) -> np.ndarray:
    """Falling snow: thresholded zoomed noise streaked at `angle`, over a whitened image.

    Flakes are N(loc, scale) noise magnified by `zoom`, kept above `threshold`,
    motion-blurred, quantised to 8 bits and added twice (once rotated 180°).
    The image is first mixed (1-blend) towards max(x, 1.5·gray + 0.5).
    """
    h, w = x.shape[:2]
    flakes = rng.normal(loc, scale, size=(h, w)).astype(np.float32)
    flakes = _centre_zoom(flakes, zoom)
    flakes[flakes < threshold] = 0
    flakes = motion_blur(np.clip(flakes, 0, 1)[..., None], blur_radius, blur_sigma, angle)[..., 0]
    flakes = np.rint(flakes * 255) / 255
    layer = (flakes + flakes[::-1, ::-1])[..., None]
    whitened = np.maximum(x, _gray(x)[..., None] * 1.5 + 0.5)
    return _finish(blend * x + (1 - blend) * whitened + layer, x)


def _water_mask(liquid: np.ndarray) -> np.ndarray:
    """Glossy droplet mask from the liquid layer: embossed distance-to-edge shading."""
    liquid_u8 = (liquid * 255).astype(np.uint8)
    inside = 255 - cv2.Canny(liquid_u8, 50, 150)
    dist = cv2.distanceTransform(inside, cv2.DIST_L2, 5)
    dist = np.minimum(dist, 20.0)
    dist = cv2.equalizeHist(cv2.blur(dist, (3, 3)).astype(np.uint8))
    emboss = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], np.float32)
    dist = cv2.blur(cv2.filter2D(dist, cv2.CV_8U, emboss), (3, 3)).astype(np.float32)
    mask = liquid_u8 * dist
    peak = mask.max()
    return mask / peak if peak > 0 else mask


def spatter(x: np.ndarray, loc: float, scale: float, sigma: float, threshold: float,
            intensity: float, mud: bool, rng: np.random.Generator) -> np.ndarray:
    """Water droplets (pale turquoise, additive) or mud splashes (brown, opaque).

    A liquid layer of N(loc, scale) noise smoothed by `sigma` and cut below
    `threshold` gives the blobs; water shades them by an embossed distance
    map scaled by `intensity`, mud blurs their mask by `intensity` and paints
    where it exceeds 0.8.
    """
    h, w = x.shape[:2]
    liquid = rng.normal(loc, scale, size=(h, w)).astype(np.float32)
    liquid = _blur_unclipped(liquid, sigma)
    liquid[liquid < threshold] = 0
    if not mud:
        color = np.array([175, 238, 238], np.float32) / 255
        mask = (_water_mask(liquid) * intensity)[..., None]
        paint = mask * (color if x.shape[2] == 3 else color @ LUMA)
        return _finish(x + paint, x)
    mask = _blur_unclipped((liquid > threshold).astype(np.float32), intensity)
    mask[mask < 0.8] = 0
    color = np.array([63, 42, 20], np.float32) / 255
    mask = mask[..., None]
    return _finish(x * (1 - mask) + mask * (color if x.shape[2] == 3 else color @ LUMA), x)


def _blur_unclipped(layer: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a 2-D layer without clipping to [0, 1]."""
    k = _gaussian_ksize(sigma, 4.0)
    return cv2.GaussianBlur(layer, (k, k), sigma, borderType=cv2.BORDER_REPLICATE)
