"""The 15 ImageNet-C corruptions (Hendrycks & Dietterich, ICLR 2019) at 5 severities, generated on the fly.

Why not a library: `imagecorruptions` 1.1.2 (the maintained PyPI package, last release 2020) needs
opencv-python, scikit-image and scipy, and calls APIs removed in current scikit-image / NumPy 2; `wand` (for
snow/motion blur in the original code) needs ImageMagick. These definitions are therefore written here from the
published parameter tables with NumPy, PIL and torch only (no new dependency).

Conventions:
- input and output are uint8 (H, W, 3) arrays; work is done in float [0, 1]; output is clipped and rounded;
- the per-severity constants are ImageNet-C's, which were tuned for 224 px images. Lengths in pixels (blur
  radii and sigmas, glass-blur shifts, motion length, elastic fields, snow blur) are multiplied by
  k = min(H, W) / 224 so that a 32 px image gets a comparable corruption (glass shifts at least 1 px);
  relative quantities (noise levels, zoom factors, pixelate factor, JPEG quality, contrast) are unchanged;
- `seed` makes every corruption deterministic (the same image, name, severity and seed give the same output).

Deviations (documented, by necessity):
- frost: ImageNet-C blends six photographs of frost that are not redistributable; here the frost layer is a
  synthetic ice texture (plasma fractal + short bright crystal streaks, slightly blue), blended with the same
  constants (c0 * image + c1 * frost);
- glass blur: the original's sequential pixel swaps (a slow Python loop) are replaced by a vectorised local
  shuffle (each pixel takes a random neighbour within the same max shift), the same local-scrambling effect;
- motion blur (also inside snow): a Gaussian-weighted line kernel at a random angle, instead of ImageMagick's.
"""
from __future__ import annotations

import io
import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from lstmvision.constants import SEVERITIES  # noqa: F401 (re-exported)

# AlexNet mean top-1 errors per corruption over the 5 severities (the ImageNet-C mCE baseline).
ALEXNET_ERR = {
    "gaussian_noise": 0.886428, "shot_noise": 0.894468, "impulse_noise": 0.922640,
    "defocus_blur": 0.819880, "glass_blur": 0.826268, "motion_blur": 0.785948, "zoom_blur": 0.798360,
    "snow": 0.866816, "frost": 0.826572, "fog": 0.819324, "brightness": 0.564592, "contrast": 0.853204,
    "elastic_transform": 0.646056, "pixelate": 0.717840, "jpeg_compression": 0.606500,
}


# ------------------------------------------------------------------------------------------ helpers
def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))).float().unsqueeze(0)


def _n(t: torch.Tensor) -> np.ndarray:
    return t.squeeze(0).double().numpy().transpose(1, 2, 0)


def _conv(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Per-channel 2-D convolution (correlation) with replicate padding; x (H, W, C)."""
    kh, kw = kernel.shape
    t = _t(x)
    c = t.shape[1]
    t = F.pad(t, (kw // 2, kw - 1 - kw // 2, kh // 2, kh - 1 - kh // 2), mode="replicate")
    k = torch.from_numpy(kernel).float().view(1, 1, kh, kw).repeat(c, 1, 1, 1)
    return _n(F.conv2d(t, k, groups=c))


def _gauss1d(sigma: float, max_radius: int | None = None) -> np.ndarray:
    r = max(1, int(math.ceil(3 * sigma)))
    if max_radius is not None:
        r = min(r, max_radius)
    g = np.exp(-0.5 * (np.arange(-r, r + 1) / max(sigma, 1e-6)) ** 2)
    return g / g.sum()


def gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return x
    g = _gauss1d(sigma, max_radius=2 * max(x.shape[:2]))
    return _conv(_conv(x, g[None, :]), g[:, None])


def _zoom_center(x: np.ndarray, z: float) -> np.ndarray:
    """Enlarge by `z` (bicubic) and crop the centre back to the original size."""
    H, W = x.shape[:2]
    h, w = max(1, int(math.ceil(H / z))), max(1, int(math.ceil(W / z)))
    top, left = (H - h) // 2, (W - w) // 2
    crop = _t(x[top:top + h, left:left + w])
    big = F.interpolate(crop, scale_factor=z, mode="bicubic", align_corners=False)
    th, tw = (big.shape[2] - H) // 2, (big.shape[3] - W) // 2
    return _n(big[:, :, th:th + H, tw:tw + W])


def _motion_kernel(radius: float, sigma: float, angle_deg: float) -> np.ndarray:
    """A line of Gaussian weights (sigma along the line) of half-length `radius`, at `angle_deg`, one-sided as
    ImageMagick's motion blur (the trail lies behind the pixel)."""
    R = max(1, int(math.ceil(radius)))
    size = 2 * R + 1
    k = np.zeros((size, size))
    a = math.radians(angle_deg)
    for i in range(0, R + 1):
        wgt = math.exp(-0.5 * (i / max(sigma, 1e-6)) ** 2)
        y, x = R + i * math.sin(a), R + i * math.cos(a)
        y0, x0 = int(math.floor(y)), int(math.floor(x))
        fy, fx = y - y0, x - x0
        for dy, wy in ((0, 1 - fy), (1, fy)):
            for dx, wx in ((0, 1 - fx), (1, fx)):
                if 0 <= y0 + dy < size and 0 <= x0 + dx < size:
                    k[y0 + dy, x0 + dx] += wgt * wy * wx
    return k / k.sum()


def plasma_fractal(size: int, wibbledecay: float, rng: np.random.Generator) -> np.ndarray:
    """Diamond-square height map of side `size` (a power of two), toroidal, scaled to [0, 1]."""
    a = np.zeros((size, size))
    step, wibble = size, 100.0
    while step >= 2:
        half = step // 2
        K = a[0::step, 0::step]
        M = (K + np.roll(K, -1, 0) + np.roll(K, -1, 1) + np.roll(np.roll(K, -1, 0), -1, 1)) / 4
        M = M + wibble * rng.uniform(-1, 1, M.shape)
        a[half::step, half::step] = M
        top = (K + np.roll(K, -1, 1) + M + np.roll(M, 1, 0)) / 4  # points (i*step, j*step + half)
        left = (K + np.roll(K, -1, 0) + M + np.roll(M, 1, 1)) / 4  # points (i*step + half, j*step)
        a[0::step, half::step] = top + wibble * rng.uniform(-1, 1, top.shape)
        a[half::step, 0::step] = left + wibble * rng.uniform(-1, 1, left.shape)
        step, wibble = half, wibble / wibbledecay
    a -= a.min()
    return a / max(a.max(), 1e-12)


def _plasma_like(x: np.ndarray, wibbledecay: float, rng: np.random.Generator) -> np.ndarray:
    H, W = x.shape[:2]
    size = 1 << max(1, int(math.ceil(math.log2(max(H, W, 2)))))
    return plasma_fractal(size, wibbledecay, rng)[:H, :W]


# ----------------------------------------------------------------------------------- corruptions
def gaussian_noise(x, s, rng, k):
    c = [0.08, 0.12, 0.18, 0.26, 0.38][s - 1]
    return x + rng.normal(0, c, x.shape)


def shot_noise(x, s, rng, k):
    c = [60, 25, 12, 5, 3][s - 1]
    return rng.poisson(x * c) / c


def impulse_noise(x, s, rng, k):
    c = [0.03, 0.06, 0.09, 0.17, 0.27][s - 1]
    u = rng.random(x.shape)
    out = x.copy()
    out[u < c / 2] = 0.0
    out[(u >= c / 2) & (u < c)] = 1.0
    return out


def defocus_blur(x, s, rng, k):
    r, alias = [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)][s - 1]
    r = r * k
    R = max(1, int(math.ceil(r)))
    yy, xx = np.mgrid[-R:R + 1, -R:R + 1]
    disk = np.clip(r + 0.5 - np.sqrt(xx ** 2 + yy ** 2), 0, 1)  # anti-aliased disk of radius r
    disk /= disk.sum()
    g = _gauss1d(max(alias * k, 0.05))
    disk = _conv(disk[:, :, None], np.outer(g, g))[:, :, 0]
    return _conv(x, disk / disk.sum())


def glass_blur(x, s, rng, k):
    sigma, delta, iters = [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)][s - 1]
    d = max(1, int(round(delta * k)))
    x = gaussian_blur(x, sigma * k)
    H, W = x.shape[:2]
    yy, xx = np.mgrid[0:H, 0:W]
    for _ in range(iters):
        dy = rng.integers(-d, d + 1, (H, W))
        dx = rng.integers(-d, d + 1, (H, W))
        x = x[np.clip(yy + dy, 0, H - 1), np.clip(xx + dx, 0, W - 1)]
    return gaussian_blur(x, sigma * k)


def motion_blur(x, s, rng, k):
    radius, sigma = [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)][s - 1]
    kernel = _motion_kernel(max(1.0, radius * k), max(0.5, sigma * k), rng.uniform(-45, 45))
    return _conv(x, kernel)


def zoom_blur(x, s, rng, k):
    zooms = [np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01), np.arange(1, 1.21, 0.02),
             np.arange(1, 1.26, 0.02), np.arange(1, 1.31, 0.03)][s - 1]
    out = x.copy()
    for z in zooms:
        out += _zoom_center(x, float(z))
    return out / (len(zooms) + 1)


def _gray(x):
    return (0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2])[..., None]


def snow(x, s, rng, k):
    loc, scale, zoom, thr, blur_r, blur_s, blend = [
        (0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7), (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
        (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65), (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)][s - 1]
    H, W = x.shape[:2]
    layer = rng.normal(loc, scale, (H, W, 1))
    layer = _zoom_center(layer, zoom)
    layer[layer < thr] = 0
    layer = np.clip(layer, 0, 1)
    layer = _conv(layer, _motion_kernel(max(1.0, blur_r * k), max(0.5, blur_s * k), rng.uniform(-135, -45)))
    x = blend * x + (1 - blend) * np.maximum(x, _gray(x) * 1.5 + 0.5)
    return x + layer + np.rot90(layer, 2)


def frost(x, s, rng, k):
    c0, c1 = [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)][s - 1]
    H, W = x.shape[:2]
    base = _plasma_like(x, 1.8, rng)[..., None]
    pts = (rng.random((H, W, 1)) < 0.02).astype(np.float64)
    streaks = np.zeros_like(pts)
    for ang in rng.uniform(0, 180, 3):
        streaks += _conv(pts, _motion_kernel(max(2.0, 12 * k), max(1.0, 6 * k), ang))
    streaks = np.clip(streaks * 4, 0, 1)
    ice = np.clip(0.55 * base + 0.6 * streaks + 0.1, 0, 1) * np.array([0.85, 0.92, 1.0])
    return c0 * x + c1 * ice


def fog(x, s, rng, k):
    c0, c1 = [(1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)][s - 1]
    m = x.max()
    x = x + c0 * _plasma_like(x, c1, rng)[..., None]
    return x * m / (m + c0)


def brightness(x, s, rng, k):
    c = [0.1, 0.2, 0.3, 0.4, 0.5][s - 1]
    v = x.max(axis=2, keepdims=True)
    v2 = np.clip(v + c, 0, 1)  # HSV value + c, hue and saturation kept
    return np.where(v > 0, x * v2 / np.maximum(v, 1e-12), v2)


def contrast(x, s, rng, k):
    c = [0.4, 0.3, 0.2, 0.1, 0.05][s - 1]
    m = x.mean(axis=(0, 1), keepdims=True)
    return (x - m) * c + m


def elastic_transform(x, s, rng, k):
    alpha, sigma, affine = [(2, 0.7, 0.1), (2, 0.08, 0.2), (0.05, 0.01, 0.02), (0.07, 0.01, 0.02),
                            (0.12, 0.01, 0.02)][s - 1]
    H, W = x.shape[:2]
    S = min(H, W)
    alpha, sigma, affine = alpha * S, max(sigma * S, 0.5), affine * S
    cy, cx, sq = H / 2, W / 2, S / 3
    src = np.array([[cx + sq, cy + sq], [cx + sq, cy - sq], [cx - sq, cy - sq]])
    dst = src + rng.uniform(-affine, affine, src.shape)
    # A maps output coordinates to input coordinates (affine through the 3 point pairs)
    A = np.linalg.solve(np.c_[dst, np.ones(3)], np.c_[src, np.ones(3)])[:, :2]
    dx = gaussian_blur(rng.uniform(-1, 1, (H, W, 1)), sigma)[..., 0] * alpha
    dy = gaussian_blur(rng.uniform(-1, 1, (H, W, 1)), sigma)[..., 0] * alpha
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    pts = np.stack([xx + dx, yy + dy, np.ones_like(xx)], -1) @ A  # (H, W, 2) input x, y
    grid = torch.from_numpy(np.stack([pts[..., 0] / (W - 1) * 2 - 1, pts[..., 1] / (H - 1) * 2 - 1], -1))
    out = F.grid_sample(_t(x), grid.unsqueeze(0).float(), mode="bilinear", padding_mode="reflection",
                        align_corners=True)
    return _n(out)


def pixelate(x, s, rng, k):
    c = [0.6, 0.5, 0.4, 0.3, 0.25][s - 1]
    H, W = x.shape[:2]
    img = Image.fromarray(_to_uint8(x))
    img = img.resize((max(1, int(W * c)), max(1, int(H * c))), Image.BOX).resize((W, H), Image.BOX)
    return np.asarray(img, dtype=np.float64) / 255


def jpeg_compression(x, s, rng, k):
    q = [25, 18, 15, 10, 7][s - 1]
    buf = io.BytesIO()
    Image.fromarray(_to_uint8(x)).save(buf, "JPEG", quality=q)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), dtype=np.float64) / 255


CORRUPTIONS: dict[str, Callable] = {f.__name__: f for f in (
    gaussian_noise, shot_noise, impulse_noise, defocus_blur, glass_blur, motion_blur, zoom_blur, snow, frost,
    fog, brightness, contrast, elastic_transform, pixelate, jpeg_compression)}


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 255), 0, 255).astype(np.uint8)


def corrupt(image: np.ndarray | Image.Image, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """`image` (uint8 (H, W, 3) array or PIL image) with corruption `name` at `severity` 1..5 -> uint8 array."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; choose from {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be 1..5, got {severity}")
    arr = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 (H, W, 3) image, got {arr.dtype} {arr.shape}")
    x = arr.astype(np.float64) / 255
    k = min(arr.shape[:2]) / 224
    rng = np.random.default_rng([seed, severity, list(CORRUPTIONS).index(name)])
    out = CORRUPTIONS[name](x, severity, rng, k)
    return _to_uint8(np.asarray(out).reshape(arr.shape))
