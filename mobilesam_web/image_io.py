"""Reading user images safely into (H, W, 3) uint8 RGB.

Handles what people actually upload: EXIF-rotated phone photos, RGBA/LA (composited on white),
palette, grayscale, CMYK, 16-bit and float images, animated GIF/WebP (first frame). Refuses
decompression bombs beyond `max_pixels` before decoding, and downscales large photos to
`max_side` (SAM works at 1024 px; bigger inputs only cost time and memory).
"""
import io
import os
from typing import Tuple, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = int(os.environ.get("MOBILESAM_MAX_PIXELS", 100_000_000))  # refuse beyond (e.g. 10000 x 10000)
MAX_SIDE = int(os.environ.get("MOBILESAM_MAX_IMAGE_SIDE", 2048))       # downscale beyond


class ImageLoadError(ValueError):
    """The input is not an image we can use; the message says why, for the user."""


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        img = Image.fromarray(np.nan_to_num((arr - lo) * scale).clip(0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def load_image(source: Union[str, os.PathLike, bytes, np.ndarray, Image.Image], max_side: int = MAX_SIDE,
               max_pixels: int = MAX_PIXELS) -> Tuple[np.ndarray, float]:
    """-> (RGB uint8 array, scale), scale = output size / decoded size (1.0 when not downscaled)."""
    if isinstance(source, np.ndarray):
        arr = source
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, -1)
        if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
            raise ImageLoadError(f"unsupported image array shape {arr.shape}")
        if arr.dtype != np.uint8:
            raise ImageLoadError(f"unsupported image array dtype {arr.dtype} (expected uint8)")
        if arr.shape[2] == 1:
            arr = np.repeat(arr, 3, 2)
        img = Image.fromarray(np.ascontiguousarray(arr))
    elif isinstance(source, Image.Image):
        img = source
    else:
        if isinstance(source, (bytes, bytearray)):
            if len(source) == 0:
                raise ImageLoadError("the file is empty (0 bytes)")
            fp = io.BytesIO(source)
        else:
            if not os.path.isfile(source):
                raise ImageLoadError("the image file was not found")
            if os.path.getsize(source) == 0:
                raise ImageLoadError("the file is empty (0 bytes)")
            fp = source
        try:
            img = Image.open(fp)
        except UnidentifiedImageError:
            raise ImageLoadError("this file is not an image format we can read (try PNG, JPEG or WebP)") from None
        except Image.DecompressionBombError:
            raise ImageLoadError(f"the image is too large (limit {max_pixels / 1e6:.0f} megapixels)") from None
        except OSError as exc:
            raise ImageLoadError(f"the image could not be read ({exc})") from None
    w, h = img.size
    if w * h > max_pixels:
        raise ImageLoadError(f"the image is too large: {w}x{h} = {w * h / 1e6:.0f} megapixels "
                             f"(limit {max_pixels / 1e6:.0f})")
    if w < 1 or h < 1:
        raise ImageLoadError("the image has no pixels")
    try:
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)  # animated: first frame
        img.load()
        img = ImageOps.exif_transpose(img) or img
        img = _to_rgb(img)
    except ImageLoadError:
        raise
    except Exception as exc:  # truncated or corrupt data surfaces only when decoding
        raise ImageLoadError(f"the image data is corrupt or truncated ({type(exc).__name__})") from None
    scale = 1.0
    if max(img.size) > max_side:
        scale = max_side / max(img.size)
        img = img.resize((max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale))), Image.LANCZOS)
    return np.asarray(img, dtype=np.uint8).copy(), scale
