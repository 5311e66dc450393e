"""The ONNX Runtime engine: SamPredictor's interface, exported graphs, an embedding cache.

`OnnxSam` holds the read-only sessions and the embedding cache and may be shared by many
users; `OnnxSamPredictor` holds one user's image state (create one per user or request).
"""

import hashlib
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Dict, Optional, Tuple

import cv2
import numpy as np

from .checkpoints import PathLike, resolve_checkpoint
from .export import APP_GRAPHS, ENGINE_GRAPHS, available_cores, cached_exports, discard_cached, ort_session
from .predictor import ImageState
from .transforms import ResizeLongestSide, get_preprocess_shape
from .validation import check_image, check_prompts

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


class OnnxSamPredictor(ImageState):
    """SamPredictor's interface on ONNX Runtime. One instance = one user's current image.

    Same methods and attributes as the torch `SamPredictor` (see `predictor.Predictor`):
    `set_image`, `set_torch_image`, `predict`, `predict_torch`, `predict_boxes`,
    `get_image_embedding`, `reset_image`, `original_size`, `input_size`, `is_image_set`,
    `transform`, `device`, `model`. Differences: `features` / `get_image_embedding()` are numpy
    arrays (1, 256, 64, 64) (the torch predictor's are tensors), and `model` is the `OnnxSam`
    engine (it has `mask_threshold`, `image_format`, `img_size`, `device`; it is not a torch
    module). `predict_torch` takes and returns CPU torch tensors.
    """

    def __init__(self, engine: OnnxSam) -> None:
        self.engine = engine
        self.transform = engine.transform
        self.last_encode_cached = False
        self.reset_image()

    @property
    def model(self) -> OnnxSam:
        return self.engine

    @property
    def device(self) -> "torch.device":
        return self.engine.device

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Encode an (H, W, 3) uint8 image (RGB unless image_format="BGR")."""
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        image = check_image(image)
        if image_format == "BGR":
            image = np.ascontiguousarray(image[..., ::-1])
        emb, self.last_encode_cached = self.engine.encode_with_info(image)
        self.set_embedding(emb, image.shape[:2])

    def set_torch_image(self, transformed_image: "torch.Tensor", original_image_size: Tuple[int, ...]) -> None:
        """Encode a (1, 3, h, w) image already resized so that max(h, w) == 1024, with values
        0..255 (as `transform.apply_image` gives). The encoder takes uint8, so the values must be
        whole numbers."""
        x = transformed_image.detach().cpu()
        if x.ndim != 4 or x.shape[:2] != (1, 3) or max(x.shape[2:]) != IMG_SIZE:
            raise ValueError(
                f"set_torch_image expects a (1, 3, h, w) tensor with longest side {IMG_SIZE}, got {tuple(x.shape)}"
            )
        arr = x[0].permute(1, 2, 0).numpy()
        if arr.dtype != np.uint8:
            if not (np.all(arr == np.round(arr)) and arr.min() >= 0 and arr.max() <= 255):
                raise ValueError(
                    "set_torch_image on the ONNX engine needs whole pixel values 0..255 "
                    "(use the torch backend for other inputs)"
                )
            arr = arr.astype(np.uint8)
        emb = self.engine.encode_resized(arr)
        self.set_embedding(emb, (int(original_image_size[0]), int(original_image_size[1])))
        self.input_size = (int(x.shape[2]), int(x.shape[3]))

    def set_embedding(self, features: np.ndarray, original_size: Tuple[int, int]) -> None:
        """Reuse an embedding computed earlier for an image of `original_size` (H, W)."""
        self.reset_image()
        self.features = np.asarray(features, dtype=np.float32)
        self.original_size = (int(original_size[0]), int(original_size[1]))
        self.input_size = get_preprocess_shape(*self.original_size, IMG_SIZE)
        self.is_image_set = True

    def _postprocess(self, low: np.ndarray, return_logits: bool) -> np.ndarray:
        """(..., 256, 256) low-res logits -> (..., H, W) masks (or logits) at the original size."""
        flat = low.reshape(-1, *low.shape[-2:])
        masks = upscale_logits(flat, self.input_size, self.original_size)
        masks = masks.reshape(*low.shape[:-2], *masks.shape[-2:])
        return masks if return_logits else masks > MASK_THRESHOLD

    def predict(
        self,
        point_coords: Optional[np.ndarray] = None,
        point_labels: Optional[np.ndarray] = None,
        box: Optional[np.ndarray] = None,
        mask_input: Optional[np.ndarray] = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Same arguments and outputs as `SamPredictor.predict`."""
        self._require_image()
        point_coords, point_labels, box, mask_input = check_prompts(point_coords, point_labels, box, mask_input)
        coords = None if point_coords is None else self.transform.apply_coords(point_coords, self.original_size)
        box_1024 = None if box is None else self.transform.apply_boxes(box, self.original_size)
        coords_a, labels_a = sam_prompt(coords, point_labels, box_1024)
        low, iou = self.engine.decode(self.features, coords_a, labels_a, mask_input)
        sl = slice(1, 4) if multimask_output else slice(0, 1)
        low, iou = low[sl], iou[sl]
        return self._postprocess(low, return_logits), iou, low

    def predict_torch(
        self,
        point_coords: Optional["torch.Tensor"],
        point_labels: Optional["torch.Tensor"],
        boxes: Optional["torch.Tensor"] = None,
        mask_input: Optional["torch.Tensor"] = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> Tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]:
        """Same as `SamPredictor.predict_torch`: batched prompts already in the 1024 frame
        (point_coords (B, N, 2), point_labels (B, N), boxes (B, 4), mask_input (B, 1, 256, 256))
        -> masks (B, C, H, W), iou_predictions (B, C), low-res logits (B, C, 256, 256) as CPU
        tensors. Box-only single-mask batches run in one call of the batched box decoder; any
        other batch is decoded prompt by prompt."""
        import torch

        self._require_image()
        if (point_coords is None) != (point_labels is None):
            raise ValueError("point_coords and point_labels must be given together")

        def as_np(t):
            if t is None:
                return None
            return np.asarray(t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else t, np.float32)

        coords, labels, masks_in = as_np(point_coords), as_np(point_labels), as_np(mask_input)
        box = as_np(boxes)
        if box is not None:
            if box.ndim not in (2, 3) or box.shape[-1] != 4:
                raise ValueError(f"boxes must have shape (B, 4), got {box.shape}")
            box = box.reshape(-1, 4)
        if coords is not None and (coords.ndim != 3 or coords.shape[-1] != 2 or labels.shape != coords.shape[:2]):
            raise ValueError(
                f"point_coords must be (B, N, 2) and point_labels (B, N), got {coords.shape} and {labels.shape}"
            )
        if masks_in is not None and masks_in.shape[1:] != (1, 256, 256):
            raise ValueError(f"mask_input must be (B, 1, 256, 256), got {masks_in.shape}")
        sizes = {len(a) for a in (coords, box, masks_in) if a is not None}
        if len(sizes) > 1:
            raise ValueError(f"prompts have different batch sizes: {sorted(sizes)}")
        bs = sizes.pop() if sizes else 1
        if box is not None and coords is None and masks_in is None and not multimask_output:
            low, iou = self.engine.decode_boxes(self.features, box)
            low, iou = low[:, None], iou[:, None]
        else:
            sl = slice(1, 4) if multimask_output else slice(0, 1)
            c = 3 if multimask_output else 1
            low = np.empty((bs, c, 256, 256), np.float32)
            iou = np.empty((bs, c), np.float32)
            for b in range(bs):
                pc, pl = sam_prompt(
                    None if coords is None else coords[b],
                    None if labels is None else labels[b],
                    None if box is None else box[b],
                )
                low4, iou4 = self.engine.decode(self.features, pc, pl, None if masks_in is None else masks_in[b])
                low[b], iou[b] = low4[sl], iou4[sl]
        masks = self._postprocess(low, return_logits)
        return torch.from_numpy(masks), torch.from_numpy(iou), torch.from_numpy(low)

    def predict_boxes(
        self, boxes: np.ndarray, return_logits: bool = False, batch_size: int = 16, low_res_only: bool = False
    ):
        """Boxes (B, 4) xyxy in original pixels -> masks (B, 1, H, W), iou (B, 1),
        low-res logits (B, 1, 256, 256), one mask each (multimask_output=False).
        With low_res_only the full-resolution masks are not computed (None)."""
        self._require_image()
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if not np.all(np.isfinite(boxes)):
            raise ValueError("boxes contain NaN or infinite values")
        b1024 = self.transform.apply_boxes(boxes, self.original_size)
        low, iou = self.engine.decode_boxes(self.features, b1024, batch_size)
        masks = None if low_res_only else self._postprocess(low[:, None], return_logits)
        return masks, iou[:, None], low[:, None]


_ENGINES: Dict[tuple, OnnxSam] = {}
_ENGINES_LOCK = threading.Lock()


def load_onnx_engine(
    checkpoint: Optional[PathLike] = None,
    cache_dir: Optional[PathLike] = None,
    threads: Optional[int] = None,
    providers: Optional[list] = None,
    decoder_checkpoint: Optional[PathLike] = None,
    log=lambda s: None,
    app: bool = False,
) -> OnnxSam:
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
