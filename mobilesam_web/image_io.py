"""Reading user images safely into (H, W, 3) uint8 RGB, in bounded memory.

Handles what people actually upload: EXIF-rotated phone photos, RGBA/LA (composited on white),
palette, grayscale, CMYK, 16-bit and float images, animated GIF/WebP (first frame). Only
raster formats with pure-Python/C decoders in Pillow are opened (never EPS/PDF, which would
start Ghostscript). Decompression bombs beyond `max_pixels` are refused from the header, before
decoding. Large photos are downscaled to `max_side` (SAM works at 1024 px) before any
full-size copy is made: a 100-megapixel image of any bit depth costs about one decoded frame
(<= 400 MB) on top of the output, never a float64 copy.
"""

import io
import os
import warnings
from typing import NamedTuple, Tuple, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

MAX_PIXELS = int(os.environ.get("MOBILESAM_MAX_PIXELS", 100_000_000))  # refuse beyond (e.g. 10000 x 10000)
MAX_SIDE = int(os.environ.get("MOBILESAM_MAX_IMAGE_SIDE", 2048))  # downscale beyond
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "TIFF", "BMP")
HIGH_BIT_DEPTH = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
STRIP_PIXELS = 1 << 22  # high-bit-depth images are converted this many pixels at a time

# EXIF orientation -> the transpose that shows the image upright (EXIF 2.32, tag 0x0112)
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class ImageLoadError(ValueError):
    """The input is not an image we can use; the message says why, for the user."""


class LoadedImage(NamedTuple):
    image: np.ndarray  # (h, w, 3) uint8 RGB, downscaled to max_side
    scale: float  # h / original height (1.0 when not downscaled)
    original_size: Tuple[int, int]  # (H, W) of the upright image as the user has it


def _strips(img: Image.Image):
    w, h = img.size
    step = max(1, STRIP_PIXELS // max(w, 1))
    for y in range(0, h, step):
        yield y, np.asarray(img.crop((0, y, w, min(h, y + step))), dtype=np.float32)


def _high_bit_depth_to_l(img: Image.Image) -> Image.Image:
    """16-bit / 32-bit int / float -> 8-bit "L", stretched to the finite range, strip by strip.
    NaN and -inf become black, +inf white."""
    lo, hi = np.inf, -np.inf
    for _, a in _strips(img):
        finite = a[np.isfinite(a)]
        if finite.size:
            lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
    if not np.isfinite(lo):  # no finite pixel at all
        lo, hi = 0.0, 0.0
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    out = Image.new("L", img.size)
    for y, a in _strips(img):
        a = np.where(np.isnan(a), lo, a)
        a = np.clip((np.clip(a, lo, hi) - lo) * scale, 0, 255) if hi > lo else np.zeros_like(a)
        out.paste(Image.fromarray(np.round(a).astype(np.uint8), "L"), (0, y))
    return out


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def _open(source) -> Image.Image:
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
    Image.init()  # register every plugin, so the formats below are all known
    try:
        with warnings.catch_warnings():  # we check the pixel count ourselves, with our own limit
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(fp, formats=FORMATS)
    except UnidentifiedImageError:
        raise ImageLoadError(
            "this file is not an image format we can read (use PNG, JPEG, WebP, GIF, TIFF or BMP)"
        ) from None
    except Image.DecompressionBombError:
        raise ImageLoadError(f"the image is too large (limit {MAX_PIXELS / 1e6:.0f} megapixels)") from None
    except OSError as exc:
        raise ImageLoadError(f"the image could not be read ({type(exc).__name__})") from None


def read_image(
    source: Union[str, os.PathLike, bytes, np.ndarray, Image.Image],
    max_side: int = MAX_SIDE,
    max_pixels: int = MAX_PIXELS,
) -> LoadedImage:
    """Any supported image -> LoadedImage(RGB uint8 array, scale, original upright size)."""
    if isinstance(source, np.ndarray):
        arr = source
        if arr.ndim == 2:
            arr = arr[..., None]
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
        img = _open(source)
    w, h = img.size
    if w < 1 or h < 1:
        raise ImageLoadError("the image has no pixels")
    if w * h > max_pixels:
        raise ImageLoadError(
            f"the image is too large: {w}x{h} = {w * h / 1e6:.0f} megapixels (limit {max_pixels / 1e6:.0f})"
        )
    try:
        try:
            orientation = int(img.getexif().get(0x0112, 1))
        except Exception:  # a broken EXIF block is no reason to refuse the pixels
            orientation = 1
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)  # animated: first frame
        target = None
        if max(w, h) > max_side:
            s = max_side / max(w, h)
            target = (max(1, round(w * s)), max(1, round(h * s)))
            if img.format in ("JPEG", "MPO"):
                img.draft(None, target)  # let libjpeg decode at 1/2, 1/4 or 1/8 scale (>= target)
        img.load()
        if img.mode in HIGH_BIT_DEPTH:
            img = _high_bit_depth_to_l(img)
        elif img.mode in ("1", "P", "PA") or img.mode not in ("L", "LA", "RGB", "RGBA", "CMYK", "YCbCr"):
            img = img.convert("RGBA" if img.mode in ("P", "PA") else "RGB")
        if target is not None:
            img = img.resize(target, Image.LANCZOS)
        if orientation in _ORIENTATION:
            img = img.transpose(_ORIENTATION[orientation])
        img = _to_rgb(img)
    except ImageLoadError:
        raise
    except MemoryError:
        raise ImageLoadError("the image is too large to decode with the memory available") from None
    except Exception as exc:  # truncated or corrupt data surfaces only when decoding
        raise ImageLoadError(f"the image data is corrupt or truncated ({type(exc).__name__})") from None
    original_size = (w, h)[::-1] if orientation not in (5, 6, 7, 8) else (w, h)
    out = np.asarray(img, dtype=np.uint8).copy()
    return LoadedImage(out, out.shape[0] / original_size[0], original_size)


def load_image(
    source: Union[str, os.PathLike, bytes, np.ndarray, Image.Image],
    max_side: int = MAX_SIDE,
    max_pixels: int = MAX_PIXELS,
) -> Tuple[np.ndarray, float]:
    """-> (RGB uint8 array, scale), scale = output size / decoded size (1.0 when not downscaled)."""
    loaded = read_image(source, max_side, max_pixels)
    return loaded.image, loaded.scale
