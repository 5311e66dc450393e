"""What users upload: every odd format becomes RGB uint8 or a clear ImageLoadError."""

import io
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from mobilesam_web.data.image_io import MAX_DECODE_BYTES, MAX_SIDE, ImageLoadError, decode_cost, load_image, read_image

from hostile_client import PeakRss


def save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_rgb_png_roundtrip():
    arr = np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    out, scale = load_image(save(Image.fromarray(arr), "PNG"))
    assert scale == 1.0 and np.array_equal(out, arr)


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "RGBA", "LA", "I;16", "F", "1"])
def test_modes_become_rgb(mode):
    base = Image.fromarray(np.random.default_rng(1).integers(0, 255, (20, 24, 3), dtype=np.uint8))
    img = (
        base.convert(mode)
        if mode not in ("I;16", "F")
        else Image.fromarray(
            (np.arange(480).reshape(20, 24) * (100 if mode == "I;16" else 0.5)).astype(
                np.uint16 if mode == "I;16" else np.float32
            )
        )
    )
    fmt = {"CMYK": "JPEG", "F": "TIFF"}.get(mode, "PNG" if mode != "I;16" else "PNG")
    out, _ = load_image(save(img, fmt))
    assert out.shape == (20, 24, 3) and out.dtype == np.uint8


def test_16bit_uses_full_range():
    img = Image.fromarray((np.arange(400).reshape(20, 20) * 150).astype(np.uint16))
    out, _ = load_image(save(img, "PNG"))
    assert out.min() == 0 and out.max() == 255


def test_transparent_pixels_on_white():
    rgba = np.zeros((4, 4, 4), np.uint8)
    out, _ = load_image(save(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert (out == 255).all()


def test_exif_orientation_is_applied():
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    data = save(Image.fromarray(arr), "JPEG", exif=exif.tobytes(), quality=95)
    out, _ = load_image(data)
    assert out.shape == (40, 20, 3)
    assert out[:20].mean() > 200 and out[20:].mean() < 50  # white half now on top


def test_animated_gif_first_frame():
    frames = [Image.new("RGB", (10, 10), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    out, _ = load_image(buf.getvalue())
    assert out[5, 5, 0] > 200 and out[5, 5, 2] < 50


def test_large_photo_is_downscaled():
    out, scale = load_image(Image.new("RGB", (3000, 1000)), max_side=1500)
    assert out.shape == (500, 1500, 3) and scale == 0.5


def _png_header_only(w: int, h: int) -> bytes:
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + chunk(b"IEND", b"")
    )


def test_decompression_bomb_refused_before_decoding():
    with pytest.raises(ImageLoadError, match="too large"):
        load_image(_png_header_only(30000, 30000))


@pytest.mark.parametrize(
    "data,match",
    [
        (b"", "empty"),
        (b"this is text, not an image", "not an image"),
        (_png_header_only(50, 50), "corrupt|truncated|could not be read"),
    ],
)
def test_bad_files(data, match):
    with pytest.raises(ImageLoadError, match=match):
        load_image(data)


def test_truncated_jpeg(tmp_path):
    data = save(Image.new("RGB", (64, 64), (10, 20, 30)), "JPEG")
    p = tmp_path / "cut.jpg"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError):
        load_image(str(p))


def test_missing_and_zero_byte_files(tmp_path):
    with pytest.raises(ImageLoadError, match="not found"):
        load_image(str(tmp_path / "nope.png"))
    (tmp_path / "zero.png").write_bytes(b"")
    with pytest.raises(ImageLoadError, match="empty"):
        load_image(str(tmp_path / "zero.png"))


# ------------------------------------------------------- bounded decoding (issue 18)
def png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def png_flat(w: int, h: int, color_type: int = 2, value: int = 0x40, extra: bytes = b"") -> bytes:
    """A w x h 8-bit PNG with every sample `value`, compressed row by row (a few MB for 100 MP).
    color_type 3 gets a gray palette whose entry 0 is transparent."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color_type]
    row = b"\x00" + bytes([value]) * (w * channels)
    z = zlib.compressobj(1)
    body = b"".join(z.compress(row) for _ in range(h)) + z.flush()
    if color_type == 3:
        extra += png_chunk(b"PLTE", bytes(i for i in range(256) for _ in range(3))) + png_chunk(b"tRNS", b"\x00")
    head = png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + head + extra + png_chunk(b"IDAT", body) + png_chunk(b"IEND", b"")


def webp_solid(w: int, h: int) -> bytes:
    """A valid lossless WebP of one colour in ~32 bytes, whatever its size (every prefix code
    has one symbol, so pixels take no bits): the issue's decompression bomb."""
    bits = []

    def put(value: int, n: int) -> None:
        bits.extend((value >> i) & 1 for i in range(n))

    put(w - 1, 14), put(h - 1, 14), put(0, 1), put(0, 3)  # size, no alpha, version 0
    put(0, 3)  # no transform, no colour cache, no meta prefix codes
    for symbol in (200, 10, 30, 255, 0):  # green, red, blue, alpha, distance: simple 8-bit codes
        put(1, 1), put(0, 1), put(1, 1), put(symbol, 8)
    data = b"\x2f" + bytes(sum(b << j for j, b in enumerate(bits[i : i + 8])) for i in range(0, len(bits), 8))
    data += b"\x00" * (len(data) % 2)
    chunk = b"VP8L" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def jpeg_claiming(w: int, h: int, progressive: bool, subsampling: int) -> bytes:
    """A ~600-byte JPEG whose header claims w x h (its data ends long before: libjpeg fills
    the rest with gray, as it does for any truncated JPEG)."""
    data = bytearray(
        save(Image.new("RGB", (16, 16), (90, 120, 200)), "JPEG", progressive=progressive, subsampling=subsampling)
    )
    i = 2
    while data[i + 1] not in (0xC0, 0xC1, 0xC2):
        i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
    data[i + 5 : i + 9] = struct.pack(">HH", h, w)
    return bytes(data)


def test_webp_bomb_is_valid():
    img = Image.open(io.BytesIO(webp_solid(40, 30)))
    assert img.size == (40, 30) and img.convert("RGB").getpixel((5, 5)) == (10, 200, 30)


@pytest.mark.parametrize(
    "make",
    [lambda: webp_solid(16383, 6000), lambda: jpeg_claiming(10000, 10000, progressive=True, subsampling=0)],
    ids=["webp-16383x6000-32-bytes", "progressive-jpeg-header-10000x10000"],
)
def test_costly_decodes_refused_from_the_header(make):
    """The WebP took +1.4 GB before (Pillow's WebP decoder holds 4 RGBA frames), the progressive
    JPEG +600 MB (libjpeg keeps every DCT coefficient): now both are refused unread."""
    data = make()
    assert decode_cost(data) > MAX_DECODE_BYTES
    with PeakRss(os.getpid()) as mem, pytest.raises(ImageLoadError, match="too large to decode here.*limit 512 MB"):
        read_image(data)
    assert mem.growth < 16 << 20, f"peak RSS grew by {mem.growth / 2**20:.0f} MB"


BOUNDED = {  # decoded in bounded memory: (encoded image, its upright (H, W))
    "jpeg-header-10000x10000": (lambda: jpeg_claiming(10000, 10000, False, 0), (10000, 10000)),
    "progressive-jpeg-4:2:0-10000x10000": (lambda: jpeg_claiming(10000, 10000, True, 2), (10000, 10000)),
    "png-100-megapixels-rgb": (lambda: png_flat(10000, 10000), (10000, 10000)),
    "png-100-megapixels-palette": (lambda: png_flat(10000, 10000, color_type=3), (10000, 10000)),
    "png-1x400000": (lambda: png_flat(1, 400_000), (400_000, 1)),
    "png-400000x1": (lambda: png_flat(400_000, 1, color_type=6), (1, 400_000)),
}


@pytest.mark.parametrize("case", list(BOUNDED))
def test_decoding_peak_memory_within_the_stated_budget(case):
    """Peak RSS of read_image (VmHWM, this process) stays within the estimate made from the
    header, which stays within the budget. Before: the 100-MP palette PNG took +860 MB
    (full-size RGBA conversion before the downscale)."""
    make, size = BOUNDED[case]
    data = make()
    estimate = decode_cost(data)
    with PeakRss(os.getpid()) as mem:
        loaded = read_image(data)
    assert loaded.original_size == size and max(loaded.image.shape) == MAX_SIDE
    assert mem.growth <= estimate <= MAX_DECODE_BYTES, (mem.growth / 2**20, estimate / 2**20)


def test_decode_budget_is_a_parameter():
    data = png_flat(3000, 3000)
    with pytest.raises(ImageLoadError, match="3000x3000 PNG needs about .* MB \\(limit 20 MB\\)"):
        read_image(data, max_decode_bytes=20 << 20)
    assert read_image(data, max_decode_bytes=decode_cost(data)).image.shape == (2048, 2048, 3)


@pytest.mark.parametrize("mode", ["RGB", "P", "CMYK", "L"])
def test_downscale_equals_pillows_reduce_then_lanczos(mode):
    """Converting and reducing tile by tile gives exactly Pillow's resize(reducing_gap=1.0) of
    the whole converted image (a 5003 x 3001 image, reduced 5x, then LANCZOS)."""
    rng = np.random.default_rng(2)
    img = Image.fromarray(rng.integers(0, 255, (3001, 5003, 3), dtype=np.uint8)).convert(mode)
    out, scale = load_image(img, max_side=1000)
    ref = img.convert("RGB").resize((1000, 600), Image.LANCZOS, reducing_gap=1.0)
    assert out.shape == (600, 1000, 3) and scale == 600 / 3001
    assert np.array_equal(out, np.asarray(ref))


def test_large_transparent_palette_on_white():
    out, _ = load_image(png_flat(5000, 3000, color_type=3, value=0))  # palette entry 0: transparent
    assert out.shape == (1229, 2048, 3) and (out == 255).all()


def _png_with(chunks: bytes, arr: np.ndarray) -> bytes:
    data = save(Image.fromarray(arr), "PNG")
    return data[:33] + chunks + data[33:]  # after the signature and IHDR


def _text_chunk(tag: bytes, size: int) -> bytes:
    payload = (b"<x:xmpmeta>" + b"a" * size)[:size]
    if tag == b"iTXt":
        return png_chunk(tag, b"XML:com.adobe.xmp\x00\x01\x00\x00\x00" + zlib.compress(payload))
    return png_chunk(tag, b"profile\x00\x00" + zlib.compress(payload))  # zTXt, iCCP


@pytest.mark.parametrize("tag", [b"iTXt", b"zTXt", b"iCCP"])
def test_png_with_a_2mb_metadata_chunk_loads(tag):
    """An ordinary 2 MB XMP block (or text, or ICC profile) made Pillow refuse the whole PNG
    ("Decompressed data too large"): the chunk is left out, the pixels load."""
    arr = np.random.default_rng(3).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    out, _ = load_image(_png_with(_text_chunk(tag, 2 << 20), arr))
    assert np.array_equal(out, arr)
    assert PngImagePlugin.MAX_TEXT_CHUNK == 1 << 20  # Pillow's limit itself is untouched


def test_png_with_too_much_text_loads():
    """100 text chunks inflating to 1 MB each (a 100 kB file) made Pillow refuse the PNG
    ("Too much memory used in text chunks"); beyond METADATA_BYTES they are left out."""
    chunk = zlib.compress(b"a" * (1 << 20))
    text = b"".join(png_chunk(b"zTXt", b"k%d\x00\x00" % i + chunk) for i in range(100))
    arr = np.zeros((8, 8, 3), np.uint8)
    assert np.array_equal(load_image(_png_with(text, arr))[0], arr)


def test_png_metadata_within_limits_is_kept():
    """Only what Pillow would refuse is left out: the EXIF orientation still applies beside a
    2 MB XMP block."""
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    data = save(Image.fromarray(arr), "PNG", exif=exif.tobytes())
    out, _ = load_image(data[:33] + _text_chunk(b"iTXt", 2 << 20) + data[33:])
    assert out.shape == (40, 20, 3) and out[:20].mean() > 200 and out[20:].mean() < 50
