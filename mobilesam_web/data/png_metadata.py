"""PNG text and ICC chunks left out while reading, when Pillow would refuse them (one inflating
beyond PngImagePlugin.MAX_TEXT_CHUNK, e.g. a 2 MB XMP block) or when a file's metadata together
passes METADATA_BYTES: the pixels matter, not the metadata, and Pillow's limits stay as they are."""

import io
import struct
import zlib
from typing import BinaryIO, Iterator, List, Optional, Tuple

from PIL import PngImagePlugin

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_METADATA = (b"tEXt", b"zTXt", b"iTXt", b"iCCP")
METADATA_BYTES = 8 << 20  # inflated PNG text/ICC kept per image at most (Pillow allows 64 MB)


class _Without(io.RawIOBase):
    """A read-only, seekable view of a seekable file with some byte ranges cut out."""

    def __init__(self, fp: BinaryIO, cuts: List[Tuple[int, int]]) -> None:
        super().__init__()
        self._fp = fp
        self._parts: List[Tuple[int, int, int]] = []  # (start in the view, start in fp, length)
        end = fp.seek(0, io.SEEK_END)
        view = real = 0
        for start, stop in sorted(cuts) + [(end, end)]:
            if start > real:
                self._parts.append((view, real, start - real))
                view += start - real
            real = max(real, stop)
        self._size, self._pos = view, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._pos = max(0, (0, self._pos, self._size)[whence] + offset)
        return self._pos

    def readinto(self, buffer) -> int:
        out = memoryview(buffer).cast("B")
        done = 0
        for view, real, length in self._parts:
            skip = self._pos - view
            if done == len(out) or not 0 <= skip < length:
                continue
            self._fp.seek(real + skip)
            got = self._fp.readinto(out[done : done + min(length - skip, len(out) - done)])
            done += got
            self._pos += got
        return done


def _png_chunks(fp: BinaryIO) -> Iterator[Tuple[bytes, int, int]]:
    """(type, offset of the chunk, length of its data) for each chunk, reading headers only."""
    pos = len(PNG_SIGNATURE)
    while True:
        fp.seek(pos)
        head = fp.read(8)
        if len(head) < 8:
            return
        length, ctype = struct.unpack(">I4s", head)
        yield ctype, pos, length
        if ctype == b"IEND":
            return
        pos += 12 + length


def _compressed_at(ctype: bytes, head: bytes) -> Optional[int]:
    """Where the zlib data starts in a chunk beginning with `head`: -1 when the chunk is
    uncompressed text, None when it is malformed or compressed with an unknown method."""
    if ctype == b"tEXt":
        return -1
    key_end = head.find(b"\0")
    if key_end < 0 or len(head) < key_end + 3:
        return None
    if ctype in (b"zTXt", b"iCCP"):
        return key_end + 2 if head[key_end + 1] == 0 else None
    compressed, method = head[key_end + 1], head[key_end + 2]  # iTXt
    lang_end = head.find(b"\0", key_end + 3)
    text_at = head.find(b"\0", lang_end + 1) + 1 if lang_end >= 0 else 0
    if text_at <= 0:
        return None
    if not compressed:
        return -1
    return text_at if method == 0 else None


def _inflated_size(fp: BinaryIO, length: int, limit: int) -> Optional[int]:
    """Size of the zlib stream of `length` bytes at fp's position once inflated; None beyond
    `limit` or when it is corrupt. Reads and inflates in blocks: memory stays below `limit`."""
    inflater, size = zlib.decompressobj(), 0
    try:
        while length > 0 and size <= limit:
            data = fp.read(min(length, 1 << 16))
            if not data:
                break
            length -= len(data)
            while data and size <= limit:
                size += len(inflater.decompress(data, limit + 1 - size))
                data = inflater.unconsumed_tail
    except zlib.error:
        return None
    return size if size <= limit else None


def _metadata_size(fp: BinaryIO, ctype: bytes, offset: int, length: int) -> Optional[int]:
    """Bytes Pillow would keep for this text/ICC chunk, or None where Pillow would refuse the
    image for it (inflating beyond MAX_TEXT_CHUNK, unknown compression)."""
    limit = PngImagePlugin.MAX_TEXT_CHUNK
    fp.seek(offset + 8)
    head = fp.read(min(length, 4096))
    start = _compressed_at(ctype, head)
    if start is None:
        return None
    if start < 0:
        return length
    fp.seek(offset + 8 + start)
    return _inflated_size(fp, length - start, limit)


def without_oversized_metadata(fp: BinaryIO) -> BinaryIO:
    """`fp`, or for a PNG with text/ICC chunks that Pillow would refuse or that exceed
    METADATA_BYTES together, a view of it without those chunks."""
    fp.seek(0)
    if fp.read(len(PNG_SIGNATURE)) != PNG_SIGNATURE:
        fp.seek(0)
        return fp
    cuts, kept = [], 0
    for ctype, offset, length in _png_chunks(fp):
        if ctype in PNG_METADATA:
            size = _metadata_size(fp, ctype, offset, length)
            if size is None or kept + size > METADATA_BYTES:
                cuts.append((offset, offset + 12 + length))
            else:
                kept += size
    fp.seek(0)
    return _Without(fp, cuts) if cuts else fp


# ------------------------------------------------------------------------ opening
