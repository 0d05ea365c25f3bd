"""Rendered frames (PS3.18 8.3.5): one frame as ``image/jpeg`` or ``image/png`` for thumbnails.

The window is the query's ``window=center,width[,function]`` if given, else
the first WindowCenter/WindowWidth of the header, else the frame's range;
Rescale Slope/Intercept are applied first, MONOCHROME1 is inverted, colour
images are passed through as RGB. ``viewport=w,h`` scales the image down to
fit (never up).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from .engine import HTTPError
from .wado import decoded_pixels, frame_count

MEDIA_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG"}


def _first(value: object) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple, MultiValue)):
        value = value[0] if value else None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def parse_window(text: str | None) -> tuple[float, float] | None:
    if not text:
        return None
    pieces = text.split(",")
    try:
        center, width = float(pieces[0]), float(pieces[1])
    except (IndexError, ValueError):
        raise HTTPError(400, "window is center,width[,function]") from None
    if width <= 0:
        raise HTTPError(400, "window width must be positive")
    return center, width


def parse_viewport(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        width, height = (int(p) for p in text.split(",")[:2])
    except ValueError:
        raise HTTPError(400, "viewport is width,height") from None
    if width < 1 or height < 1:
        raise HTTPError(400, "viewport must be positive")
    return width, height


def render(
    ds: Dataset,
    frame: int,
    media_type: str,
    window: tuple[float, float] | None = None,
    viewport: tuple[int, int] | None = None,
    quality: int = 90,
) -> bytes:
    """The ``frame`` (1-based) of ``ds`` encoded as ``media_type``."""
    if "PixelData" not in ds:
        raise HTTPError(404, "the instance has no pixel data")
    count = frame_count(ds)
    if not 1 <= frame <= count:
        raise HTTPError(404, f"frame {frame} out of range 1..{count}")
    pixels = decoded_pixels(ds)
    if count > 1:
        pixels = pixels[frame - 1]
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples == 1:
        data = pixels.astype(np.float64) * (_first(ds.get("RescaleSlope")) or 1.0) + (_first(ds.get("RescaleIntercept")) or 0.0)
        if window is None:
            center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
            window = (center, width) if center is not None and width and width > 0 else None
        if window is None:
            lo, hi = float(data.min()), float(data.max())
        else:
            center, width = window
            lo, hi = center - width / 2, center + width / 2
        scaled = np.clip((data - lo) / max(hi - lo, 1e-9), 0.0, 1.0) * 255.0
        if str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
            scaled = 255.0 - scaled
        image = Image.fromarray(scaled.round().astype(np.uint8), mode="L")
    else:
        image = Image.fromarray(np.asarray(pixels, dtype=np.uint8)).convert("RGB")
    if viewport is not None:
        image.thumbnail(viewport)
    out = io.BytesIO()
    fmt = MEDIA_TYPES[media_type]
    image.save(out, format=fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return out.getvalue()
