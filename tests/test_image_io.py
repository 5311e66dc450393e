"""What users upload: every odd format becomes RGB uint8 or a clear ImageLoadError."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from mobilesam_web.image_io import ImageLoadError, load_image


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
