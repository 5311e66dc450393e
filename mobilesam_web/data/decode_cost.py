"""What decoding a frame costs in memory, from its header (see image_io.py's docstring for what
each of Pillow's decoders holds), so that an image is refused before any pixel is decoded."""

import io
import struct
from typing import BinaryIO, Optional, Tuple

from PIL import Image

Size = Tuple[int, int]
TILE_PIXELS = 1 << 20  # frames are converted and reduced this many pixels at a time


def _storage_bytes(mode: str) -> int:
    """Bytes per pixel of Pillow's in-memory frame in `mode`."""
    if mode in ("1", "L", "P"):
        return 1
    return 2 if mode.startswith("I;16") else 4


def _length(fp: BinaryIO) -> int:
    pos = fp.tell()
    end = fp.seek(0, io.SEEK_END)
    fp.seek(pos)
    return end


def _first_scan_components(fp: BinaryIO) -> int:
    """Components in a JPEG's first scan (its SOS header); 0 when it cannot be found."""
    pos = fp.tell()
    try:
        fp.seek(2)
        while True:
            head = fp.read(4)
            if len(head) < 4 or head[0] != 0xFF:
                return 0
            if head[1] == 0xFF:  # a fill byte: the marker starts at the next one
                fp.seek(-3, io.SEEK_CUR)
                continue
            if head[1] == 0x01 or 0xD0 <= head[1] <= 0xD7:  # TEM, RSTn: no length
                fp.seek(-2, io.SEEK_CUR)
                continue
            if head[1] == 0xDA:
                count = fp.read(1)
                return count[0] if count else 0
            fp.seek(struct.unpack(">H", head[2:])[0] - 2, io.SEEK_CUR)
    finally:
        fp.seek(pos)


def _jpeg_coefficient_bytes(img: Image.Image, fp: BinaryIO, size: Size) -> int:
    """The whole-image DCT coefficients libjpeg keeps for a progressive or multi-scan JPEG
    (2 bytes per sample, per component at its sampling); 0 for a single-scan one."""
    layers = getattr(img, "layer", None) or [(0, 1, 1, 0)] * 3
    if not img.info.get("progressive") and _first_scan_components(fp) >= len(layers):
        return 0
    h_max, v_max = max(c[1] for c in layers) or 1, max(c[2] for c in layers) or 1
    total = 0
    for _, h_samp, v_samp, _ in layers:  # Pillow's `layer`: (id, H, V, table)
        h_samp, v_samp = max(1, h_samp), max(1, v_samp)
        blocks_w = -(-size[0] * h_samp // (h_max * 8))
        blocks_h = -(-size[1] * v_samp // (v_max * 8))
        total += -(-blocks_w // h_samp) * h_samp * -(-blocks_h // v_samp) * v_samp * 128
    return total


def _tiff_buffer_bytes(img: Image.Image) -> int:
    """libtiff's buffer for one strip or tile as Pillow decodes it (at most 4 bytes a pixel)."""
    w, h = img.size
    try:
        tags = img.tag_v2
        if 322 in tags and 323 in tags:
            pixels = int(tags[322]) * int(tags[323])
        else:
            pixels = w * min(h, int(tags.get(278, h)))
        bits = tags.get(258, 8)
        bits = sum(bits) if isinstance(bits, tuple) else int(bits) * int(tags.get(277, 1))
    except Exception:  # odd tags: assume a whole-image strip
        return w * h * 4
    return pixels * max(4, -(-bits // 8))


def _frame_bytes(img: Image.Image, fp: BinaryIO, header_size: Size) -> int:
    """What the decoder holds while decoding `img` (after any JPEG draft)."""
    w, h = img.size
    frame = w * h * _storage_bytes(img.mode)
    if img.format == "WEBP":  # libwebp's 2 RGBA canvases + the bytes handed over + Pillow's frame
        return 4 * w * h * 4 + _length(fp)
    if img.format in ("JPEG", "MPO"):
        return frame + _jpeg_coefficient_bytes(img, fp, header_size)
    if img.format == "TIFF":  # Pillow hands libtiff the whole file when it has no descriptor
        return frame + _tiff_buffer_bytes(img) + _length(fp)
    if img.format == "BMP" and img.info.get("compression") in (1, 2):  # RLE: built in Python first
        return frame + 3 * w * h
    if img.format == "PNG" and getattr(img, "n_frames", 1) > 1:  # APNG: a disposal frame and its crop
        return 3 * frame
    return frame


def reduction(size: Size, target: Optional[Size]) -> Tuple[int, int]:
    """Box-reduce factors that bring `size` to between 1 and 2 times `target` per axis."""
    if target is None:
        return 1, 1
    return max(1, size[0] // target[0]), max(1, size[1] // target[1])


def frame_cost(img: Image.Image, fp: BinaryIO, header_size: Size, target: Optional[Size]) -> int:
    """Peak memory (bytes) read_image needs for `img`, from its header: the larger of
    decoding + reducing (frame, reduced copy, a tile's temporaries) and finishing (the reduced
    copy, its premultiplied copy, the resize's two passes, then RGB and array copies)."""
    frame = _frame_bytes(img, fp, header_size)
    fx, fy = reduction(img.size, target)
    rw, rh = -(-img.size[0] // fx), -(-img.size[1] // fy)
    tw, th = target or (rw, rh)
    reducing = frame + 4 * rw * rh + 32 * TILE_PIXELS
    finishing = frame * (fx == fy == 1) + 4 * (2 * rw * rh + tw * rh + tw * th)
    return max(reducing, finishing, 16 * tw * th)
