"""MobileSAMv2's object-aware detector: a one-class YOLOv8-seg network proposing box prompts.

Reproduces the official pipeline (MobileSAMv2/Inference.py + its vendored ultralytics 8.0.120)
step for step, on CPU, without ultralytics:
letterbox (stride-32 "auto" padding, value 114) -> network input in B, G, R order (the official
predictor reverses the RGB array it is given) / 255 -> head -> NMS (score > conf, IoU, at most
300) -> box edges within 20 px of the letterboxed input's border snapped to it -> rescale to the
original image and clip.
"""

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import cv2
import numpy as np
import torch

from ..data.boxes import nms
from ..data.validation import check_image
from ..engine.checkpoints import CheckpointError, PathLike, file_sha256
from ..engine.modeling.yolo import YOLOv8
from ..engine.safe_unpickle import load_ultralytics_checkpoint, named_tensors
from ..engine.weights import load_into

LETTERBOX_VALUE = 114
BORDER_PX = 20


@dataclass(frozen=True)
class Range:
    """The values a parameter accepts, written as in the README: [0, 1] or (0, 1]."""

    low: float
    high: float
    low_inclusive: bool = True

    def __contains__(self, value: float) -> bool:  # False for NaN
        return (self.low < value or (self.low_inclusive and value == self.low)) and value <= self.high

    def __str__(self) -> str:
        return f"{'[' if self.low_inclusive else '('}{self.low:g}, {self.high:g}]"


# The one definition of the detector's parameter ranges: its own checks, the app's (ui/params.py)
# and the README's Limits table all use these.
# Boxes scoring > conf are kept, so conf=1 keeps none; conf=0 would send every anchor to NMS.
CONF_RANGE = Range(0.0, 1.0, low_inclusive=False)
# NMS drops a box overlapping a kept one by IoU > iou, so iou=0 drops any overlap, 1 none.
NMS_IOU_RANGE = Range(0.0, 1.0)
# What the network takes; the app allows less (MOBILESAM_MIN_IMGSZ, MOBILESAM_MAX_IMGSZ).
IMGSZ_RANGE = Range(32, 4096)
IMGSZ_STRIDE = 32  # the network's largest stride: imgsz is rounded up to a multiple of it


def letterbox(image: np.ndarray, imgsz: int, stride: int = 32) -> Tuple[np.ndarray, float, Tuple[int, int]]:
    """Resize keeping aspect (up or down) so the long side fits `imgsz`, then pad to the next
    multiple of `stride` (not to a square). Returns (padded image, ratio, (pad_left, pad_top))."""
    h, w = image.shape[:2]
    r = min(imgsz / h, imgsz / w)
    new_w, new_h = int(round(w * r)), int(round(h * r))
    dw, dh = (imgsz - new_w) % stride / 2, (imgsz - new_h) % stride / 2
    if (w, h) != (new_w, new_h):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    image = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(LETTERBOX_VALUE,) * 3)
    return image, r, (left, top)


def network_input(image_rgb: np.ndarray, imgsz: int) -> np.ndarray:
    """(H, W, 3) RGB uint8 -> (1, 3, h, w) uint8 network input, channels B, G, R as the
    official pipeline feeds them."""
    padded, _, _ = letterbox(np.ascontiguousarray(image_rgb[..., ::-1]), imgsz)
    return np.ascontiguousarray(padded.transpose(2, 0, 1)[None])


def postprocess(
    preds: np.ndarray,
    input_hw: Tuple[int, int],
    orig_hw: Tuple[int, int],
    conf: float,
    iou: float,
    max_det: int = 300,
    border: float = BORDER_PX,
) -> Tuple[np.ndarray, np.ndarray]:
    """Head output (4 + nc + nm, A) -> boxes (N, 4) xyxy in original pixels, scores (N,)."""
    scores = preds[4]
    cand = np.nonzero(scores > conf)[0]
    cand = cand[np.argsort(-scores[cand], kind="stable")]
    xywh = preds[:4, cand].T
    boxes = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
    keep = nms(boxes, scores[cand], iou, max_keep=max_det)
    boxes, s = boxes[keep].astype(np.float32), scores[cand][keep].astype(np.float32)
    H, W = input_hw
    boxes[boxes[:, 0] < border, 0] = 0
    boxes[boxes[:, 1] < border, 1] = 0
    boxes[boxes[:, 2] > W - border, 2] = W
    boxes[boxes[:, 3] > H - border, 3] = H
    h, w = orig_hw
    gain = min(H / h, W / w)
    pad_x, pad_y = round((W - w * gain) / 2 - 0.1), round((H - h * gain) / 2 - 0.1)
    boxes[:, [0, 2]] -= pad_x
    boxes[:, [1, 3]] -= pad_y
    boxes /= gain
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    return boxes, s


class ObjectAwareDetector:
    """detector(image_rgb_uint8, imgsz=1024, conf=0.4, iou=0.9) -> (boxes_xyxy, scores)."""

    def __init__(self, network: YOLOv8, names: Optional[dict] = None, source: Optional[Path] = None) -> None:
        # channels_last lets oneDNN pick its fastest convolutions: 2.3 s instead of 3.2 s
        # (onnxruntime) or 3.2 s (contiguous) for YOLOv8x at 1024 x 704 on 2 cores.
        self.network = network.eval().to(memory_format=torch.channels_last)
        self.names = names or {0: "object"}
        self.source = source
        self._onnx = None
        self._lock = threading.Lock()

    @classmethod
    def from_checkpoint(cls, path: PathLike, fuse: bool = True) -> "ObjectAwareDetector":
        """Load an ultralytics-format YOLOv8-seg checkpoint (e.g. ObjectAwareModel.pt) safely."""
        ckpt = load_ultralytics_checkpoint(path)
        model = ckpt.get("ema") or ckpt["model"]
        cfg = getattr(model, "yaml", None)
        if not isinstance(cfg, dict):
            raise CheckpointError(f"{path}: the model carries no yaml dict to rebuild it from")
        head = model.__dict__["_modules"]["model"].__dict__["_modules"][
            str(len(cfg["backbone"]) + len(cfg["head"]) - 1)
        ]
        reg_max, nm = int(head.__dict__.get("reg_max", 16)), int(head.__dict__.get("nm", 32))
        network = YOLOv8(cfg, reg_max=reg_max, nm=nm)
        sd = {k: (v.float() if v.is_floating_point() else v) for k, v in named_tensors(model)}
        load_into(network, sd, str(path))
        # BatchNorm eps comes from the checkpoint (ultralytics sets 1e-3).
        stub_modules = dict(_walk_stubs(model))
        for name, m in network.named_modules():
            if isinstance(m, torch.nn.BatchNorm2d) and name in stub_modules:
                m.eps = float(stub_modules[name].__dict__.get("eps", m.eps))
        if fuse:
            network.fuse()
        return cls(network.eval(), getattr(model, "names", None), Path(path))

    @torch.no_grad()
    def raw(self, input_u8: np.ndarray) -> np.ndarray:
        """(1, 3, h, w) uint8 network input -> head output (4 + nc + nm, A) float32."""
        if self._onnx is not None:
            return self._onnx.run(None, {"images": input_u8})[0][0]
        x = torch.from_numpy(input_u8).float() / 255.0
        return self.network(x.contiguous(memory_format=torch.channels_last))[0].contiguous().numpy()

    def __call__(
        self, image: np.ndarray, imgsz: int = 1024, conf: float = 0.4, iou: float = 0.9, max_det: int = 300
    ) -> Tuple[np.ndarray, np.ndarray]:
        image = check_image(image)
        if imgsz not in IMGSZ_RANGE:
            raise ValueError(f"imgsz must be between {IMGSZ_RANGE.low:g} and {IMGSZ_RANGE.high:g}, got {imgsz}")
        if conf not in CONF_RANGE:
            raise ValueError(f"conf must be in {CONF_RANGE}, got {conf}")
        if iou not in NMS_IOU_RANGE:
            raise ValueError(f"iou must be in {NMS_IOU_RANGE}, got {iou}")
        inp = network_input(image, imgsz)
        preds = self.raw(inp)
        return postprocess(preds, inp.shape[2:], image.shape[:2], conf, iou, max_det)

    def export_onnx(self, path: PathLike) -> Path:
        """The network with head decoding in the graph: images (1, 3, h, w) uint8 (B, G, R) ->
        output0 (1, 4 + nc + nm, anchors)."""
        import warnings

        class _Graph(torch.nn.Module):
            def __init__(self, net):
                super().__init__()
                self.net = net

            def forward(self, images):
                return self.net(images.float() / 255.0)

        path = Path(path)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _Graph(self.network),
                (torch.zeros(1, 3, 640, 640, dtype=torch.uint8),),
                str(path),
                input_names=["images"],
                output_names=["output0"],
                opset_version=17,
                dynamic_axes={"images": {2: "height", 3: "width"}, "output0": {2: "anchors"}},
                dynamo=False,
            )
        return path

    def use_onnxruntime(
        self, cache_dir: Optional[PathLike] = None, threads: Optional[int] = None
    ) -> "ObjectAwareDetector":
        """Switch inference to ONNX Runtime (exported once into the cache, keyed by checkpoint hash)."""
        from ..engine.onnx.cache import DEFAULT_CACHE_DIR, EXPORTER_VERSION, ort_session

        with self._lock:
            if self._onnx is None:
                tag = file_sha256(self.source)[:16] if self.source else "unsaved"
                folder = Path(cache_dir or DEFAULT_CACHE_DIR) / f"detector-{tag}-v{EXPORTER_VERSION}"
                folder.mkdir(parents=True, exist_ok=True)
                path = folder / "detector.onnx"
                if not path.is_file() or self.source is None:
                    tmp = self.export_onnx(folder / f".detector-{threading.get_ident()}.onnx")
                    tmp.replace(path)
                self._onnx = ort_session(path, threads)
        return self


def _walk_stubs(stub, prefix: str = ""):
    for name, child in stub.__dict__.get("_modules", {}).items():
        if child is not None:
            full = f"{prefix}{name}"
            yield full, child
            yield from _walk_stubs(child, full + ".")
