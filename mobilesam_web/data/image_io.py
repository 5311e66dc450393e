"""Reading user images safely into (H, W, 3) uint8 RGB, in bounded and stated memory.

Handles what people actually upload: EXIF-rotated phone photos, RGBA/LA (composited on white),
palette, grayscale, CMYK, 16-bit and float images, animated GIF/WebP/PNG (first frame). Only
raster formats with pure-Python/C decoders in Pillow are opened (never EPS/PDF, which would
start Ghostscript).

Memory is bounded from the header, before any pixel is decoded: images of more than
`max_pixels` pixels are refused, and so are those whose decoding `decode_cost` estimates at
more than `max_decode_bytes` (MOBILESAM_MAX_DECODE_MB, default 512 MB), counting what the
decoder holds plus our working copies. What Pillow's decoders hold for the frame:
- JPEG: the frame at 1/2, 1/4 or 1/8 scale when that is still at least `max_side` (libjpeg's DCT
  scaling). A progressive (or multi-scan) JPEG also keeps every DCT coefficient of the full
  image, 2 bytes per sample: a 100-megapixel 4:4:4 one needs 600 MB, 4:2:0 300 MB.
- PNG, GIF, BMP, TIFF: the full frame at Pillow's storage size (1 byte per pixel for gray and
  palette, 2 for 16-bit gray, 4 for the rest), plus libtiff's strip or tile buffer and the file,
  BMP's run-length buffers, or an animated PNG's disposal frame: a 100-megapixel RGB PNG takes
  400 MB.
- WebP: the full frame four times over (libwebp's two RGBA canvases, the copy it hands to
  Python, Pillow's image): 16 bytes per pixel, so at most ~30 megapixels at the default budget.
The frame is then converted (palette, CMYK, 16-bit, float) and box-reduced tile by tile to
between 1 and 2 times the `max_side` working size; only that copy is resized (LANCZOS), turned
upright and made RGB, after the frame is released. No full-size converted copy is ever made.

PNG text and ICC chunks that Pillow would refuse (one inflating beyond
PngImagePlugin.MAX_TEXT_CHUNK, 1 MB, e.g. a 2 MB XMP block) or that bring a file's metadata
beyond METADATA_BYTES are left out while reading: the pixels matter, not the metadata, and
Pillow's limits stay as they are.
"""

import contextlib
import io
import os
import warnings
from typing import BinaryIO, Callable, Iterator, NamedTuple, Optional, Tuple, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from .decode_cost import TILE_PIXELS, Size, frame_cost, reduction
from .png_metadata import without_oversized_metadata

MAX_PIXELS = int(os.environ.get("MOBILESAM_MAX_PIXELS", 100_000_000))  # refuse beyond (e.g. 10000 x 10000)
MAX_SIDE = int(os.environ.get("MOBILESAM_MAX_IMAGE_SIDE", 2048))  # downscale beyond
MAX_DECODE_BYTES = int(float(os.environ.get("MOBILESAM_MAX_DECODE_MB", 512)) * 2**20)  # refuse beyond
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "TIFF", "BMP")
HIGH_BIT_DEPTH = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")

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

Source = Union[str, os.PathLike, bytes, np.ndarray, Image.Image]


class ImageLoadError(ValueError):
    """The input is not an image we can use; the message says why, for the user."""


class LoadedImage(NamedTuple):
    image: np.ndarray  # (h, w, 3) uint8 RGB, downscaled to max_side
    scale: float  # h / original height (1.0 when not downscaled)
    original_size: Tuple[int, int]  # (H, W) of the upright image as the user has it


# ------------------------------------------------------------------ PNG metadata left out
@contextlib.contextmanager
def _encoded(source: Union[str, os.PathLike, bytes]) -> Iterator[BinaryIO]:
    """The encoded image as a seekable binary file."""
    if isinstance(source, (bytes, bytearray)):
        if len(source) == 0:
            raise ImageLoadError("the file is empty (0 bytes)")
        yield without_oversized_metadata(io.BytesIO(source))
        return
    path = os.fspath(source)
    if not os.path.isfile(path):
        raise ImageLoadError("the image file was not found")
    if os.path.getsize(path) == 0:
        raise ImageLoadError("the file is empty (0 bytes)")
    with open(path, "rb") as fp:
        yield without_oversized_metadata(fp)


def _identify(fp: BinaryIO) -> Image.Image:
    """Pillow's lazy image: the header is read, no pixel is decoded."""
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
    except Exception as exc:  # a header Pillow cannot parse: ValueError, SyntaxError, struct.error...
        raise ImageLoadError(f"the image could not be read ({type(exc).__name__})") from None


def _target(size: Size, max_side: int) -> Optional[Size]:
    """The working size: the long side brought down to max_side (None when already within)."""
    w, h = size
    if max(w, h) <= max_side:
        return None
    s = max_side / max(w, h)
    return max(1, round(w * s)), max(1, round(h * s))


# ------------------------------------------------------------------- decoding cost
def decode_cost(source: Union[str, os.PathLike, bytes], max_side: int = MAX_SIDE) -> int:
    """read_image's peak memory for this file, in bytes, estimated from its header alone."""
    with _encoded(source) as fp:
        img = _identify(fp)
        header_size = img.size
        target = _target(header_size, max_side)
        if target is not None and img.format in ("JPEG", "MPO"):
            img.draft(None, target)
        return frame_cost(img, fp, header_size, target)


def _check_cost(img: Image.Image, fp: BinaryIO, header_size: Size, target: Optional[Size], budget: int) -> None:
    cost = frame_cost(img, fp, header_size, target)
    if cost <= budget:
        return
    if img.format == "WEBP":
        hint = "WebP decoding takes 16 bytes a pixel: send it as JPEG or PNG, or smaller"
    elif img.info.get("progressive"):
        hint = "a baseline (non-progressive) JPEG or a smaller image is fine"
    else:
        hint = "send a smaller image"
    w, h = header_size
    raise ImageLoadError(
        f"the image is too large to decode here: {w}x{h} {img.format} needs about {cost / 2**20:.0f} MB "
        f"(limit {budget / 2**20:.0f} MB); {hint}"
    )


# -------------------------------------------------------------- converting and reducing
def _working_mode(img: Image.Image) -> str:
    """The mode we reduce and resize in: L, LA, RGB or RGBA."""
    mode = img.mode
    if mode in ("L", "LA", "RGB", "RGBA"):
        return mode
    if mode in HIGH_BIT_DEPTH or mode == "1":
        return "L"
    if mode == "La":
        return "LA"
    if mode in ("PA", "RGBa") or (mode == "P" and "transparency" in img.info):
        return "RGBA"
    return "RGB"


def _tiles(size: Size, factors: Tuple[int, int]) -> Iterator[Tuple[int, int, int, int]]:
    """Boxes covering the image, about TILE_PIXELS each, aligned to the reduce factors (so
    reducing tile by tile gives what reducing the whole would)."""
    (w, h), (fx, fy) = size, factors
    rows = max(fy, TILE_PIXELS // w // fy * fy)
    cols = w if rows * w <= TILE_PIXELS else max(fx, TILE_PIXELS // rows // fx * fx)
    for y in range(0, h, rows):
        for x in range(0, w, cols):
            yield x, y, min(w, x + cols), min(h, y + rows)


def _finite_range(img: Image.Image) -> Tuple[float, float]:
    lo, hi = np.inf, -np.inf
    for box in _tiles(img.size, (1, 1)):
        a = np.asarray(img.crop(box), dtype=np.float32)
        finite = a[np.isfinite(a)]
        if finite.size:
            lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
    return (lo, hi) if np.isfinite(lo) else (0.0, 0.0)


def _stretch(tile: Image.Image, lo: float, hi: float) -> Image.Image:
    """16-bit / 32-bit int / float -> 8-bit "L", the finite range stretched to 0..255;
    NaN and -inf become black, +inf white."""
    if hi <= lo:
        return Image.new("L", tile.size)
    a = np.asarray(tile, dtype=np.float32)
    a = np.clip((np.where(np.isnan(a), lo, a) - lo) * (255.0 / (hi - lo)), 0, 255)
    return Image.fromarray(np.round(a).astype(np.uint8))


def _tile_converter(img: Image.Image, mode: str) -> Callable[[Image.Image], Image.Image]:
    if img.mode in HIGH_BIT_DEPTH:
        lo, hi = _finite_range(img)
        return lambda tile: _stretch(tile, lo, hi)
    if img.mode == mode:
        return lambda tile: tile
    return lambda tile: tile.convert(mode)


def _reduced(
    img: Image.Image, target: Optional[Size], content: Tuple[float, float]
) -> Tuple[Image.Image, Tuple[float, float, float, float]]:
    """`img` in its working mode, box-reduced to between 1 and 2 times `target`, converted and
    reduced tile by tile (the full-size frame is never copied or converted whole); with the box
    that the image's `content` (its extent in img's pixels) covers in the result. The same
    pixels as Pillow's resize(target, reducing_gap=1.0), which reduces first too."""
    mode = _working_mode(img)
    fx, fy = factors = reduction(img.size, target)
    box = (0, 0, content[0] / fx, content[1] / fy)
    if mode == img.mode and factors == (1, 1):
        return img, box
    convert = _tile_converter(img, mode)
    w, h = img.size
    out = Image.new(mode, (-(-w // fx), -(-h // fy)))
    for tile_box in _tiles(img.size, factors):
        tile = convert(img.crop(tile_box))
        if factors != (1, 1):
            tile = tile.reduce(factors)  # premultiplied by alpha, as Pillow's resize is
        out.paste(tile, (tile_box[0] // fx, tile_box[1] // fy))
    return out, box


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("RGBA", "LA"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(0x0112, 1))
    except Exception:  # a broken EXIF block is no reason to refuse the pixels
        return 1


def _from_array(arr: np.ndarray) -> Image.Image:
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ImageLoadError(f"unsupported image array shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ImageLoadError(f"unsupported image array dtype {arr.dtype} (expected uint8)")
    return Image.fromarray(np.ascontiguousarray(arr[..., 0] if arr.shape[2] == 1 else arr))


def _check_pixels(size: Size, max_pixels: int) -> None:
    w, h = size
    if w < 1 or h < 1:
        raise ImageLoadError("the image has no pixels")
    if w * h > max_pixels:
        raise ImageLoadError(
            f"the image is too large: {w}x{h} = {w * h / 1e6:.0f} megapixels (limit {max_pixels / 1e6:.0f})"
        )


@contextlib.contextmanager
def _decoding() -> Iterator[None]:
    """Turn what corrupt or truncated data raises while decoding into ImageLoadError."""
    try:
        yield
    except ImageLoadError:
        raise
    except MemoryError:
        raise ImageLoadError("the image is too large to decode with the memory available") from None
    except Exception as exc:  # truncated or corrupt data surfaces only when decoding
        raise ImageLoadError(f"the image data is corrupt or truncated ({type(exc).__name__})") from None


def read_image(
    source: Source,
    max_side: int = MAX_SIDE,
    max_pixels: int = MAX_PIXELS,
    max_decode_bytes: int = MAX_DECODE_BYTES,
) -> LoadedImage:
    """Any supported image -> LoadedImage(RGB uint8 array, scale, original upright size).
    A file or bytes are refused from the header when over `max_pixels` or when decoding would
    take more than `max_decode_bytes` (see decode_cost); arrays and PIL images are in memory
    already and only checked against `max_pixels`."""
    if isinstance(source, (np.ndarray, Image.Image)):
        img = _from_array(source) if isinstance(source, np.ndarray) else source
        header_size = img.size
        _check_pixels(header_size, max_pixels)
        target = _target(header_size, max_side)
        with _decoding():
            orientation = _orientation(img)
            img, box = _reduced(img, target, img.size)
    else:
        with _encoded(source) as fp:
            img = _identify(fp)
            header_size = content = img.size
            _check_pixels(header_size, max_pixels)
            target = _target(header_size, max_side)
            if target is not None and img.format in ("JPEG", "MPO"):
                # libjpeg decodes at 1/2, 1/4 or 1/8 scale (>= target), rounding the size up
                drafted = img.draft(None, target)
                content = drafted[1][2:] if drafted else content
            _check_cost(img, fp, header_size, target, max_decode_bytes)
            with _decoding():
                orientation = _orientation(img)  # (loads a PNG: its eXIf chunk may follow the pixels)
                img.load()
                img, box = _reduced(img, target, content)  # rebinding drops the full-size frame
    with _decoding():  # each step rebinds `img`, so one working copy at a time stays alive
        if target is not None and (img.size != target or box != (0, 0, *target)):
            img = img.resize(target, Image.LANCZOS, box=box)
        if orientation in _ORIENTATION:
            img = img.transpose(_ORIENTATION[orientation])
        out = np.array(_to_rgb(img), dtype=np.uint8)
    w, h = header_size
    original_size = (w, h) if orientation in (5, 6, 7, 8) else (h, w)
    return LoadedImage(out, out.shape[0] / original_size[0], original_size)


def load_image(
    source: Source,
    max_side: int = MAX_SIDE,
    max_pixels: int = MAX_PIXELS,
) -> Tuple[np.ndarray, float]:
    """-> (RGB uint8 array, scale), scale = output size / decoded size (1.0 when not downscaled)."""
    loaded = read_image(source, max_side, max_pixels)
    return loaded.image, loaded.scale
