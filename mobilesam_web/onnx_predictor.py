"""The ONNX Runtime engine: SamPredictor's interface, exported graphs, an embedding cache.

`OnnxSam` holds the read-only sessions and the embedding cache and may be shared by many
users; `OnnxSamPredictor` holds one user's image state (create one per user or request).
"""
import hashlib
import threading
from collections import OrderedDict
from typing import Dict, Optional, Tuple

import cv2
import numpy as np

from .export import APP_GRAPHS, ENGINE_GRAPHS, available_cores, cached_exports, discard_cached, ort_session
from .predictor import ImageState
from .transforms import ResizeLongestSide, get_preprocess_shape
from .validation import check_image, check_prompts
from .weights import PathLike, resolve_checkpoint

IMG_SIZE = 1024
MASK_THRESHOLD = 0.0


class EmbeddingCache:
    """LRU of image embeddings keyed by image content hash, bounded in bytes. Thread-safe."""

    def __init__(self, max_bytes: int = 256 << 20) -> None:
        self.max_bytes = max_bytes
        self._items: "OrderedDict[str, np.ndarray]" = OrderedDict()
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
    """Exported MobileSAM graphs in ONNX Runtime plus a shared embedding cache."""

    def __init__(self, paths: Dict[str, PathLike], threads: Optional[int] = None,
                 providers: Optional[list] = None, embedding_cache_bytes: int = 256 << 20) -> None:
        self.paths = dict(paths)
        self.threads = threads or available_cores()
        self.providers = providers
        self._sessions: Dict[str, object] = {}
        self._lock = threading.Lock()
        self.cache = EmbeddingCache(embedding_cache_bytes)
        self.transform = ResizeLongestSide(IMG_SIZE)

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
        resized = self.transform.apply_image(image)
        emb = self.session("encoder").run(None, {"image": resized})[0]
        self.cache.put(key, emb)
        return emb, False

    def warm_up(self) -> None:
        """Create the server's sessions now, so the first user request does not pay for it."""
        for name in ENGINE_GRAPHS:
            if name in self.paths:
                self.session(name)

    def decode(self, embedding: np.ndarray, coords: np.ndarray, labels: np.ndarray,
               mask_input: Optional[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
        """SAM-convention prompt (1, N, 2) / (1, N) -> low-res logits (4, 256, 256), iou (4,)."""
        has_mask = mask_input is not None
        feeds = {
            "image_embeddings": embedding,
            "point_coords": coords.astype(np.float32),
            "point_labels": labels.astype(np.float32),
            "mask_input": (mask_input.reshape(1, 1, 256, 256).astype(np.float32) if has_mask
                           else np.zeros((1, 1, 256, 256), np.float32)),
            "has_mask_input": np.array([1.0 if has_mask else 0.0], np.float32),
        }
        low, iou = self.session("decoder_lowres").run(None, feeds)
        return low[0], iou[0]

    def decode_boxes(self, embedding: np.ndarray, boxes_1024: np.ndarray,
                     batch_size: int = 16) -> Tuple[np.ndarray, np.ndarray]:
        """(B, 4) boxes in the 1024 frame -> low-res logits (B, 256, 256), iou (B,).

        Decoded in chunks: a box costs about 40 MB of activations, so a chunk of 16 stays
        near 0.6 GB however many boxes there are."""
        sess = self.session("decoder_boxes")
        lows, ious = [], []
        for s in range(0, len(boxes_1024), batch_size):
            low, iou = sess.run(None, {"image_embeddings": embedding,
                                       "boxes": boxes_1024[s:s + batch_size].astype(np.float32)})
            lows.append(low[:, 0])
            ious.append(iou[:, 0])
        if not lows:
            return np.zeros((0, 256, 256), np.float32), np.zeros((0,), np.float32)
        return np.concatenate(lows), np.concatenate(ious)


class OnnxSamPredictor(ImageState):
    """SamPredictor's interface on ONNX Runtime. One instance = one user's current image.

    `get_image_embedding()` returns a numpy array (1, 256, 64, 64); batched boxes go through
    `predict_boxes` (the counterpart of `predict_torch` with boxes)."""

    def __init__(self, engine: OnnxSam) -> None:
        self.engine = engine
        self.transform = engine.transform
        self.last_encode_cached = False
        self.reset_image()

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        image = check_image(image)
        if image_format == "BGR":
            image = np.ascontiguousarray(image[..., ::-1])
        emb, self.last_encode_cached = self.engine.encode_with_info(image)
        self.set_embedding(emb, image.shape[:2])

    def set_embedding(self, features: np.ndarray, original_size: Tuple[int, int]) -> None:
        self.reset_image()
        self.features = np.asarray(features, dtype=np.float32)
        self.original_size = (int(original_size[0]), int(original_size[1]))
        self.input_size = get_preprocess_shape(*self.original_size, IMG_SIZE)
        self.is_image_set = True

    def predict(self, point_coords: Optional[np.ndarray] = None, point_labels: Optional[np.ndarray] = None,
                box: Optional[np.ndarray] = None, mask_input: Optional[np.ndarray] = None,
                multimask_output: bool = True, return_logits: bool = False
                ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Same arguments and outputs as `SamPredictor.predict`."""
        self._require_image()
        point_coords, point_labels, box, mask_input = check_prompts(point_coords, point_labels, box, mask_input)
        coords, labels = [], []
        if point_coords is not None:
            coords.append(self.transform.apply_coords(point_coords, self.original_size))
            labels.append(point_labels.astype(np.float32))
        if box is not None:
            coords.append(self.transform.apply_boxes(box, self.original_size).reshape(2, 2))
            labels.append(np.array([2.0, 3.0], np.float32))
        elif point_coords is not None:
            coords.append(np.zeros((1, 2)))  # SAM's padding point when there is no box
            labels.append(np.array([-1.0], np.float32))
        if not coords:  # no prompt at all: SAM decodes from the padding point alone
            coords, labels = [np.zeros((1, 2))], [np.array([-1.0], np.float32)]
        coords_a = np.concatenate(coords)[None].astype(np.float32)
        labels_a = np.concatenate(labels)[None]
        low, iou = self.engine.decode(self.features, coords_a, labels_a, mask_input)
        sl = slice(1, 4) if multimask_output else slice(0, 1)
        low, iou = low[sl], iou[sl]
        masks = upscale_logits(low, self.input_size, self.original_size)
        if not return_logits:
            masks = masks > MASK_THRESHOLD
        return masks, iou, low

    def predict_boxes(self, boxes: np.ndarray, return_logits: bool = False, batch_size: int = 16,
                      low_res_only: bool = False):
        """Boxes (B, 4) xyxy in original pixels -> masks (B, 1, H, W), iou (B, 1),
        low-res logits (B, 1, 256, 256), one mask each (multimask_output=False).
        With low_res_only the full-resolution masks are not computed (None)."""
        self._require_image()
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if not np.all(np.isfinite(boxes)):
            raise ValueError("boxes contain NaN or infinite values")
        b1024 = self.transform.apply_boxes(boxes, self.original_size)
        low, iou = self.engine.decode_boxes(self.features, b1024, batch_size)
        masks = None
        if not low_res_only:
            masks = upscale_logits(low, self.input_size, self.original_size)[:, None]
            if not return_logits:
                masks = masks > MASK_THRESHOLD
        return masks, iou[:, None], low[:, None]


_ENGINES: Dict[tuple, OnnxSam] = {}
_ENGINES_LOCK = threading.Lock()


def load_onnx_engine(checkpoint: Optional[PathLike] = None, cache_dir: Optional[PathLike] = None,
                     threads: Optional[int] = None, providers: Optional[list] = None,
                     decoder_checkpoint: Optional[PathLike] = None, log=lambda s: None,
                     app: bool = False) -> OnnxSam:
    """The (process-wide, read-only) engine for a checkpoint; exports on first use.
    decoder_checkpoint: MobileSAMv2's Prompt_guided_Mask_Decoder.pt to use instead of
    MobileSAM's own prompt encoder / mask decoder. app: also export the browser decoder."""
    path = resolve_checkpoint("mobile_sam", checkpoint)
    key = (str(path), str(decoder_checkpoint), str(cache_dir), threads, tuple(providers or ()), app)
    with _ENGINES_LOCK:
        if key not in _ENGINES:
            graphs = APP_GRAPHS if app else ENGINE_GRAPHS
            for attempt in (1, 2):
                paths = cached_exports(path, cache_dir, graphs, log=log, decoder_checkpoint=decoder_checkpoint)
                engine = OnnxSam(paths, threads, providers)
                refused = _refused_by_ort(engine)
                if not refused:
                    break
                if attempt == 2:
                    raise RuntimeError(f"ONNX Runtime refuses freshly exported graphs: {refused}")
                for name, why in refused.items():
                    discard_cached(paths[name], log, f"ONNX Runtime refused it ({why})")
            _ENGINES[key] = engine
        return _ENGINES[key]


def _refused_by_ort(engine: OnnxSam) -> Dict[str, str]:
    """{graph: reason} for each graph ONNX Runtime cannot load. The engine's own graphs get
    their (kept) sessions now; the browser graphs are loaded once and dropped: a graph the
    server can't load is no better for a browser."""
    refused = {}
    for name, p in engine.paths.items():
        try:
            if name in ENGINE_GRAPHS:
                engine.session(name)
            else:
                ort_session(p, 1, engine.providers)
        except Exception as exc:
            refused[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    return refused
