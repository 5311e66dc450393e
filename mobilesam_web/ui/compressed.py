"""gzip copies of the large files the page downloads (onnxruntime-web, the browser's graphs).

Compressing them costs about 6 s of one core per server start (the WASM runtimes at level 6), so
each copy is also kept on disk, in the ONNX cache's `gzip/` folder, named by the sha256 of what it
holds: a restarted server (a Space's restart, another test server) reads it back instead. A copy
is used only when its gzip trailer matches the file's CRC-32 and length, and it is written
atomically; where the folder can't be written, the server just compresses in memory."""

import gzip
import hashlib
import os
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Dict, Optional, Tuple

from ..paths import default_onnx_cache


def compress_level(path: Path) -> int:
    """gzip level 1 for ONNX graphs, 6 for the runtime's code. Float32 weights hardly compress:
    at level 1 they take an eighth of level 6's time (16 MB decoder: 0.4 s, not 3.6 s, of one
    core) for the same size (float32 noise: 14.86 vs 14.82 MB; the parity fixture's float16-exact
    weights: 10.2 vs 9.6 MB). The WASM runtime is 15% smaller at level 6, for ~1 s per start."""
    return 1 if path.suffix == ".onnx" else 6


def default_store(onnx_cache_dir: Optional[str] = None) -> Path:
    """`gzip/` in the ONNX cache in use (the app's, else $MOBILESAM_ONNX_CACHE, else
    paths.default_onnx_cache)."""
    return Path(onnx_cache_dir or os.environ.get("MOBILESAM_ONNX_CACHE") or default_onnx_cache()) / "gzip"


def matches(packed: bytes, raw: bytes) -> bool:
    """Whether a gzip member's trailer (CRC-32 and length mod 2**32) is `raw`'s."""
    if len(packed) < 18 or packed[:2] != b"\x1f\x8b":
        return False
    trailer = (zlib.crc32(raw) & 0xFFFFFFFF).to_bytes(4, "little") + (len(raw) & 0xFFFFFFFF).to_bytes(4, "little")
    return packed[-8:] == trailer


class CompressedFiles:
    """gzip copies of large files, made (or read from `store`) on first use and kept in memory,
    keyed by path, size and mtime, so a re-exported model is compressed again."""

    def __init__(self, store: Optional[Path] = None) -> None:
        self.store = store
        if store is not None:  # what a process killed mid-write left (an hour: never another's write)
            for tmp in store.glob(".gz-*"):
                try:
                    if time.time() - tmp.stat().st_mtime > 3600:
                        tmp.unlink()
                except OSError:
                    pass
        self._items: Dict[Tuple[str, int, int], bytes] = {}
        self._locks: Dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(path: Path) -> Tuple[str, int, int]:
        st = path.stat()
        return str(path), st.st_size, st.st_mtime_ns

    def gzipped(self, path: Path) -> bytes:
        key = self._key(path)
        with self._lock:
            lock = self._locks.setdefault(key[0], threading.Lock())
        with lock:  # one compression per file; other files are not held up
            data = self._items.get(key)
            if data is None:
                data = self._compress(path)
                for old in [k for k in self._items if k[0] == key[0]]:
                    del self._items[old]
                self._items[key] = data
            return data

    def size_if_ready(self, path: Path) -> Optional[int]:
        """The compressed size if the copy exists already (never waits for a compression)."""
        data = self._items.get(self._key(path))
        return None if data is None else len(data)

    def _compress(self, path: Path) -> bytes:
        raw = path.read_bytes()
        level = compress_level(path)
        kept = None
        if self.store is not None:
            kept = self.store / f"{hashlib.sha256(raw).hexdigest()[:32]}-{level}{path.suffix}.gz"
            try:
                data = kept.read_bytes()
                if matches(data, raw):
                    return data
            except OSError:
                pass
        data = gzip.compress(raw, compresslevel=level, mtime=0)
        if kept is not None:
            try:
                self._write(kept, data)
            except OSError:
                pass  # a read-only or full cache: this process keeps its copy in memory all the same
        return data

    @staticmethod
    def _write(kept: Path, data: bytes) -> None:
        """Atomically, readable by all (another user's server may share the cache)."""
        kept.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".gz-", dir=kept.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), 0o644)
                f.write(data)
            os.replace(tmp, kept)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
