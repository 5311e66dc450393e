"""`OnnxSamPredictor`: SamPredictor's interface over the ONNX Runtime engine (engine.py). It
holds one user's image state: create one per user or request; the engine may be shared.
"""

import threading
from typing import TYPE_CHECKING, Dict, Optional, Tuple

import numpy as np

from ...data.validation import check_image, check_prompts
from ..checkpoints import PathLike, resolve_checkpoint
from ..interface import ImageState
from ..transforms import get_preprocess_shape
from .cache import APP_GRAPHS, ENGINE_GRAPHS, cached_exports, discard_cached, ort_session
from .engine import IMG_SIZE, MASK_THRESHOLD, OnnxSam, sam_prompt, upscale_logits

if TYPE_CHECKING:
    import torch


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
