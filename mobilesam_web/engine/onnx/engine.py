"""The ONNX Runtime engine: the read-only sessions over the exported graphs and an embedding
cache, shared by every user of a checkpoint (one user's image state: predictor.py)."""

import hashlib
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Dict, Optional, Tuple

import cv2
import numpy as np

from ..checkpoints import PathLike
from ..transforms import ResizeLongestSide
from .cache import ENGINE_GRAPHS, available_cores, ort_session

if TYPE_CHECKING:
    import torch

IMG_SIZE = 1024
MASK_THRESHOLD = 0.0


class EmbeddingCache:
    """LRU of image embeddings keyed by image content hash, bounded in bytes. Thread-safe."""

    def __init__(self, max_bytes: int = 256 << 20) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    @staticmethod
    def key(image: np.ndarray) -> str:
        h = hashlib.sha256(np.ascontiguousarray(image).data)
        h.update(repr(image.shape).encode())
        return h.hexdigest()

    def get(self, key: str) -> Optional[np.ndarray]:
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: str, value: np.ndarray) -> None:
        if value.nbytes > self.max_bytes:
            return
        value = value.copy()
        value.setflags(write=False)  # shared between users: nobody may modify it
        with self._lock:
            if key in self._items:
                self._bytes -= self._items.pop(key).nbytes
            self._items[key] = value
            self._bytes += value.nbytes
            while self._bytes > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self._bytes -= old.nbytes

    def __len__(self) -> int:
        return len(self._items)


def upscale_logits(low_res: np.ndarray, input_size: Tuple[int, int], original_size: Tuple[int, int]) -> np.ndarray:
    """(C, 256, 256) low-res logits -> (C, H, W) logits, as SAM's postprocess_masks does:
    bilinear (half-pixel centres) to 1024, crop to the resized size, bilinear to the original."""
    h, w = original_size
    out = np.empty((low_res.shape[0], h, w), np.float32)
    for i, m in enumerate(low_res):
        up = cv2.resize(m, (IMG_SIZE, IMG_SIZE), interpolation=cv2.INTER_LINEAR)
        up = up[: input_size[0], : input_size[1]]
        out[i] = cv2.resize(up, (w, h), interpolation=cv2.INTER_LINEAR)
    return out


class OnnxSam:
    """Exported MobileSAM graphs in ONNX Runtime plus a shared embedding cache.

    It is what `OnnxSamPredictor.model` returns: the attributes that SAM scripts read from
    `predictor.model` (`mask_threshold`, `image_format`, `img_size`, `device`) are here; it is
    not a torch module (no parameters, no forward).
    """

    mask_threshold: float = MASK_THRESHOLD
    image_format: str = "RGB"
    img_size: int = IMG_SIZE

    def __init__(
        self,
        paths: Dict[str, PathLike],
        threads: Optional[int] = None,
        providers: Optional[list] = None,
        embedding_cache_bytes: int = 256 << 20,
    ) -> None:
        self.paths = dict(paths)
        self.threads = threads or available_cores()
        self.providers = providers
        self._sessions: Dict[str, object] = {}
        self._lock = threading.Lock()
        self.cache = EmbeddingCache(embedding_cache_bytes)
        self.transform = ResizeLongestSide(IMG_SIZE)

    @property
    def device(self) -> "torch.device":
        """Where `predict_torch` puts its tensors: always the CPU (ONNX Runtime returns numpy)."""
        import torch

        return torch.device("cpu")

    def session(self, name: str):
        """Sessions are created on first use (the box decoder is not needed for clicks)."""
        with self._lock:
            if name not in self._sessions:
                if name not in self.paths:
                    raise RuntimeError(f"the ONNX graph {name!r} was not exported")
                self._sessions[name] = ort_session(self.paths[name], self.threads, self.providers)
            return self._sessions[name]

    def encode(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (1, 256, 64, 64) float32 embedding (cached by content)."""
        return self.encode_with_info(image)[0]

    def encode_with_info(self, image: np.ndarray) -> Tuple[np.ndarray, bool]:
        """(embedding, True if it came from the cache)."""
        key = self.cache.key(image)
        emb = self.cache.get(key)
        if emb is not None:
            return emb, True
        emb = self.encode_resized(self.transform.apply_image(image))
        self.cache.put(key, emb)
        return emb, False

    def encode_resized(self, resized: np.ndarray) -> np.ndarray:
        """(h, w, 3) uint8 RGB with max(h, w) == 1024 -> embedding (not cached)."""
        return self.session("encoder").run(None, {"image": np.ascontiguousarray(resized)})[0]

    def warm_up(self) -> None:
        """Create the server's sessions now, so the first user request does not pay for it."""
        for name in ENGINE_GRAPHS:
            if name in self.paths:
                self.session(name)

    def decode(
        self, embedding: np.ndarray, coords: np.ndarray, labels: np.ndarray, mask_input: Optional[np.ndarray]
    ) -> Tuple[np.ndarray, np.ndarray]:
        """SAM-convention prompt (1, N, 2) / (1, N) -> low-res logits (4, 256, 256), iou (4,).
        N may be 0: no sparse tokens, which is how SAM encodes "no point and no box"."""
        has_mask = mask_input is not None
        feeds = {
            "image_embeddings": embedding,
            "point_coords": coords.astype(np.float32),
            "point_labels": labels.astype(np.float32),
            "mask_input": (
                mask_input.reshape(1, 1, 256, 256).astype(np.float32)
                if has_mask
                else np.zeros((1, 1, 256, 256), np.float32)
            ),
            "has_mask_input": np.array([1.0 if has_mask else 0.0], np.float32),
        }
        low, iou = self.session("decoder_lowres").run(None, feeds)
        return low[0], iou[0]

    def decode_boxes(
        self, embedding: np.ndarray, boxes_1024: np.ndarray, batch_size: int = 16
    ) -> Tuple[np.ndarray, np.ndarray]:
        """(B, 4) boxes in the 1024 frame -> low-res logits (B, 256, 256), iou (B,).

        Decoded in chunks: a box costs about 40 MB of activations, so a chunk of 16 stays
        near 0.6 GB however many boxes there are."""
        sess = self.session("decoder_boxes")
        lows, ious = [], []
        for s in range(0, len(boxes_1024), batch_size):
            low, iou = sess.run(
                None, {"image_embeddings": embedding, "boxes": boxes_1024[s : s + batch_size].astype(np.float32)}
            )
            lows.append(low[:, 0])
            ious.append(iou[:, 0])
        if not lows:
            return np.zeros((0, 256, 256), np.float32), np.zeros((0,), np.float32)
        return np.concatenate(lows), np.concatenate(ious)


def sam_prompt(
    coords: Optional[np.ndarray], labels: Optional[np.ndarray], box: Optional[np.ndarray]
) -> Tuple[np.ndarray, np.ndarray]:
    """One prompt in the 1024 frame -> the SAM ONNX decoder's point_coords (1, N, 2) and
    point_labels (1, N): the points, then the box as two corners labelled 2 and 3; without a box
    a padding point (0, 0) labelled -1 follows the points, as SamPredictor's prompt encoder
    does. No points and no box give N = 0 (no sparse tokens), not a lone padding point."""
    cs, ls = [], []
    if coords is not None:
        cs.append(np.asarray(coords, np.float32).reshape(-1, 2))
        ls.append(np.asarray(labels, np.float32).reshape(-1))
    if box is not None:
        cs.append(np.asarray(box, np.float32).reshape(2, 2))
        ls.append(np.array([2.0, 3.0], np.float32))
    elif coords is not None:
        cs.append(np.zeros((1, 2), np.float32))
        ls.append(np.array([-1.0], np.float32))
    if not cs:
        return np.zeros((1, 0, 2), np.float32), np.zeros((1, 0), np.float32)
    return np.concatenate(cs)[None], np.concatenate(ls)[None]
