"""Small skew of a page image, measured cheaply on a thumbnail and undone before OCR."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from PIL import Image

#: Photographed and fed pages lean by a few degrees; past this it is layout, not skew.
MAX_ANGLE = 10.0
#: Below this Tesseract copes on its own and rotating would only cost time and sharpness.
MIN_ANGLE = 0.3
#: Long side of the thumbnail the angle is measured on: enough for 0.1 degree steps.
THUMBNAIL_SIDE = 1000
#: Ink pixels sampled at most, so a photo on a dark table costs no more than a page.
MAX_SAMPLES = 200_000


def skew_angle(image: Image.Image) -> float:
    """Degrees to rotate ``image`` counter-clockwise (Pillow's sense) to level its text lines.

    Projection profile: the ink is projected on the rows of the page turned by each candidate
    angle; text lines are level where that profile is sharpest (largest squared steps).
    """
    thumb = image.convert("L")
    scale = THUMBNAIL_SIDE / max(thumb.size)
    if scale < 1:
        size = (max(1, round(thumb.width * scale)), max(1, round(thumb.height * scale)))
        thumb = thumb.resize(size, Image.Resampling.BOX)
    gray = np.asarray(thumb)
    ys, xs = np.nonzero(gray <= _otsu_threshold(gray))
    if len(ys) < 100 or len(ys) == gray.size:
        return 0.0
    step = len(ys) // MAX_SAMPLES + 1
    rows = ys[::step].astype(np.float64)
    columns = xs[::step].astype(np.float64) - gray.shape[1] / 2

    def sharpness(angle: float) -> float:
        radians = np.deg2rad(angle)
        projected = rows * np.cos(radians) - columns * np.sin(radians)
        profile = np.bincount((projected - projected.min()).astype(np.int64))
        steps = np.diff(profile.astype(np.float64))
        return float(np.dot(steps, steps))

    coarse = max(np.arange(-MAX_ANGLE, MAX_ANGLE + 1e-9, 0.5), key=sharpness)
    return float(max(np.arange(coarse - 0.5, coarse + 0.5 + 1e-9, 0.1), key=sharpness))


def deskew(image: Image.Image) -> Image.Image:
    """``image`` levelled, or itself when it leans less than ``MIN_ANGLE``."""
    angle = skew_angle(image)
    if abs(angle) < MIN_ANGLE:
        return image
    if image.mode not in ("L", "RGB"):
        image = image.convert("L" if image.mode in ("1", "P", "LA") else "RGB")
    white = 255 if image.mode == "L" else (255, 255, 255)
    return image.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True, fillcolor=white)


def _otsu_threshold(gray: NDArray[np.uint8]) -> int:
    histogram = np.bincount(gray.ravel(), minlength=256).astype(np.float64)
    below = np.cumsum(histogram)
    above = below[-1] - below
    mass = np.cumsum(histogram * np.arange(256))
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mass[-1] * below / below[-1] - mass) ** 2 / (below * above)
    return int(np.nanargmax(between)) if np.isfinite(between).any() else 127
