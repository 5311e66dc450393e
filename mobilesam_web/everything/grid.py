"""SAM's grid-based automatic mask generator: the baseline that segment-everything beats.

Prompts a regular grid of points (32x32 by default), keeps masks by predicted IoU and stability,
removes duplicates with box NMS. Same settings, record format and output order as
segment-anything's `SamAutomaticMaskGenerator`, on either engine (torch or ONNX Runtime).
"""

import math
from itertools import product
from typing import Any, Callable, Dict, Generator, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch

from ..data.boxes import masks_to_boxes, nms, xyxy_to_xywh
from ..data.masks import stability_score
from ..data.rle import area_from_rle, coco_rle, masks_to_rle, rle_to_mask
from ..data.validation import check_image
from ..engine.interface import Predictor
from ..engine.modeling import Sam
from ..engine.predictor import SamPredictor


def build_point_grid(n_per_side: int) -> np.ndarray:
    """(n*n, 2) cell-centre points in [0, 1], x fastest."""
    offset = 1 / (2 * n_per_side)
    side = np.linspace(offset, 1 - offset, n_per_side)
    xs = np.tile(side[None, :], (n_per_side, 1))
    ys = np.tile(side[:, None], (1, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def build_all_layer_point_grids(n_per_side: int, n_layers: int, scale_per_layer: int) -> List[np.ndarray]:
    """One grid per crop layer; layer i has n_per_side / scale_per_layer^i points per side."""
    return [build_point_grid(int(n_per_side / (scale_per_layer**i))) for i in range(n_layers + 1)]


def sam_batched_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """The indices `torchvision.ops.batched_nms` keeps for one category, in its order.

    torchvision's NMS kernel orders by score with a stable sort: tied scores (all masks of one
    crop share a crop score; the small-region clean-up scores are 0 or 1) keep their input order.
    Above 1000 boxes torchvision takes another path that sorts the kept indices again with
    torch's default (unstable) sort; that is reproduced too.
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    s = torch.as_tensor(np.asarray(scores, np.float32))
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    order = torch.sort(s, descending=True, stable=True).indices.numpy()
    # The scores in `order` are non-increasing, so nms' own stable sort keeps this order.
    keep = order[nms(boxes[order], s.numpy()[order], iou_threshold)]
    if boxes.size > 4000:
        kept = np.sort(keep)
        keep = kept[torch.sort(s[kept], descending=True).indices.numpy()]
    return keep.astype(np.int64)


def remove_small_regions(mask: np.ndarray, area_thresh: float, mode: str) -> Tuple[np.ndarray, bool]:
    """SAM's mask clean-up. mode "holes": fill background regions smaller than area_thresh
    pixels; mode "islands": drop foreground regions smaller than that (if every region is
    smaller, the largest stays). Regions are 8-connected. Returns (mask, changed), changed being
    True whenever a region was under the threshold."""
    import cv2

    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    holes = mode == "holes"
    mask = np.asarray(mask, bool)
    # Label the regions to look at: the background for holes, the mask itself for islands.
    n, labels, stats, _ = cv2.connectedComponentsWithStats((~mask if holes else mask).astype(np.uint8), 8)
    areas = stats[1:, cv2.CC_STAT_AREA]  # label 0 is everything else
    small = np.flatnonzero(areas < area_thresh) + 1
    if small.size == 0:
        return mask, False
    if holes:
        return mask | np.isin(labels, small), True
    big = np.setdiff1d(np.arange(1, n), small)
    if big.size == 0:
        big = np.array([int(np.argmax(areas)) + 1])
    return np.isin(labels, big), True


def generate_crop_boxes(
    im_size: Tuple[int, int], n_layers: int, overlap_ratio: float
) -> Tuple[List[List[int]], List[int]]:
    """The whole image, then 2^k x 2^k overlapping crops for layers k = 1..n_layers (XYXY)."""
    im_h, im_w = im_size
    short = min(im_h, im_w)
    boxes, layers = [[0, 0, im_w, im_h]], [0]

    def crop_len(orig: int, n: int, overlap: int) -> int:
        return int(math.ceil((overlap * (n - 1) + orig) / n))

    for layer in range(1, n_layers + 1):
        n = 2**layer
        overlap = int(overlap_ratio * short * (2 / n))
        cw, ch = crop_len(im_w, n, overlap), crop_len(im_h, n, overlap)
        x0s = [int((cw - overlap) * i) for i in range(n)]
        y0s = [int((ch - overlap) * i) for i in range(n)]
        for x0, y0 in product(x0s, y0s):
            boxes.append([x0, y0, min(x0 + cw, im_w), min(y0 + ch, im_h)])
            layers.append(layer)
    return boxes, layers


class SamAutomaticMaskGenerator:
    """segment-anything's `SamAutomaticMaskGenerator`, same parameters and record format.

    `model`: a MobileSAM `Sam` (wrapped in a torch `SamPredictor`) or any predictor (the torch
    `SamPredictor` or the ONNX Runtime `OnnxSamPredictor` from `load_predictor`).
    Exactly one of `points_per_side` and `point_grids` must be given (as upstream: pass
    `points_per_side=None` with `point_grids`, a list of (n, 2) arrays in [0, 1], one per crop
    layer). `min_mask_region_area` > 0 removes holes and islands smaller than that many pixels
    from each mask, then drops duplicates (box NMS preferring unchanged masks), as upstream.

    Order: records come in the official generator's order, including among masks whose sort
    key ties (with crop_n_layers >= 1 all masks of one crop share the crop score): ties are
    ordered by torch's (unstable) sort exactly as torchvision's NMS orders them, so the same
    torch version gives the same order; another torch version may order ties differently, in
    ours and in the official code alike.
    """

    def __init__(
        self,
        model: Union[Sam, Predictor],
        points_per_side: Optional[int] = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: Optional[List[np.ndarray]] = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
    ) -> None:
        if output_mode not in ("binary_mask", "uncompressed_rle", "coco_rle"):
            raise ValueError(f"output_mode must be binary_mask, uncompressed_rle or coco_rle, got {output_mode!r}")
        if (points_per_side is None) == (point_grids is None):
            raise ValueError(
                "exactly one of points_per_side and point_grids must be given "
                "(pass points_per_side=None with point_grids)"
            )
        if points_per_batch < 1 or (points_per_side is not None and points_per_side < 1):
            raise ValueError("points_per_side and points_per_batch must be >= 1")
        if crop_n_layers < 0 or min_mask_region_area < 0:
            raise ValueError("crop_n_layers and min_mask_region_area must be >= 0")
        if isinstance(model, Sam):
            self.predictor: Predictor = SamPredictor(model)
        elif isinstance(model, Predictor):
            self.predictor = model
        else:
            raise TypeError(
                f"model must be a MobileSAM model (Sam) or a predictor (SamPredictor, "
                f"OnnxSamPredictor), got {type(model).__name__}"
            )
        if points_per_side is not None:
            self.point_grids = build_all_layer_point_grids(
                points_per_side, crop_n_layers, crop_n_points_downscale_factor
            )
        else:
            self.point_grids = [np.asarray(g, dtype=np.float64).reshape(-1, 2) for g in point_grids]
            if len(self.point_grids) < crop_n_layers + 1:
                raise ValueError(
                    f"point_grids needs one grid per crop layer ({crop_n_layers + 1}), got {len(self.point_grids)}"
                )
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.crop_n_points_downscale_factor = crop_n_points_downscale_factor
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode

    def generate(
        self, image: np.ndarray, progress: Optional[Callable[[int, int], None]] = None
    ) -> List[Dict[str, Any]]:
        """Records sorted as the official generator: segmentation, area, bbox (XYWH as
        SAM's records: w = last column - first, one short of the mask; our COCO exports
        measure the box on the mask), predicted_iou, point_coords, stability_score, crop_box (XYWH).

        progress(points_done, points_total) is called after each batch of points."""
        steps = self.iter_generate(image)
        while True:
            try:
                done, total = next(steps)
            except StopIteration as finished:
                return finished.value
            if progress is not None:
                progress(done, total)

    def iter_generate(self, image: np.ndarray) -> Generator[Tuple[int, int], None, List[Dict[str, Any]]]:
        """`generate` one batch of points at a time: yields (points_done, points_total) after
        each batch and returns the records. Closing the generator stops the work at the next
        batch (how a cancelled request stops using the CPU)."""
        image = check_image(image)
        orig_h, orig_w = image.shape[:2]
        crop_boxes, layer_idxs = generate_crop_boxes((orig_h, orig_w), self.crop_n_layers, self.crop_overlap_ratio)
        total = sum(len(self.point_grids[layer]) for layer in layer_idxs)
        done = 0
        data: Dict[str, list] = {k: [] for k in ("rles", "boxes", "iou", "points", "stability", "crop")}
        for crop_box, layer in zip(crop_boxes, layer_idxs):
            for n in self._process_crop(image, crop_box, layer, (orig_h, orig_w), data):
                done += n
                yield done, total
        return self._records(data, len(crop_boxes))

    def _records(self, data: Dict[str, list], n_crops: int) -> List[Dict[str, Any]]:
        if n_crops > 1 and data["rles"]:
            # Prefer masks from smaller crops when crops overlap (the score as upstream computes
            # it: 1 / integer area, in float32).
            crops = torch.as_tensor(np.array(data["crop"], dtype=np.int64))
            scores = 1 / ((crops[:, 2] - crops[:, 0]) * (crops[:, 3] - crops[:, 1]))
            boxes = np.array(data["boxes"], dtype=np.float32).reshape(-1, 4)
            _filter(data, sam_batched_nms(boxes, scores.to(torch.float32).numpy(), self.crop_nms_thresh))
        if self.min_mask_region_area > 0 and data["rles"]:
            self._remove_small_regions(data)
        records = []
        for i in range(len(data["rles"])):
            rle = data["rles"][i]
            if self.output_mode == "binary_mask":
                seg = rle_to_mask(rle)
            elif self.output_mode == "coco_rle":
                seg = coco_rle(rle)
            else:
                seg = rle
            area = area_from_rle(rle)
            records.append(
                {
                    "segmentation": seg,
                    "area": area,
                    "bbox": xyxy_to_xywh(data["boxes"][i]),
                    "predicted_iou": float(data["iou"][i]),
                    "point_coords": [list(map(float, data["points"][i]))],
                    "stability_score": float(data["stability"][i]),
                    "crop_box": xyxy_to_xywh(data["crop"][i]),
                }
            )
        return records

    def _remove_small_regions(self, data: Dict[str, list]) -> None:
        """Clean every mask (holes, then islands), then box NMS that prefers masks that needed
        no change; changed masks that survive get their new RLE and box."""
        masks, scores = [], []
        for rle in data["rles"]:
            mask, filled = remove_small_regions(rle_to_mask(rle), self.min_mask_region_area, "holes")
            mask, removed = remove_small_regions(mask, self.min_mask_region_area, "islands")
            masks.append(mask)
            scores.append(0.0 if (filled or removed) else 1.0)
        stacked = torch.as_tensor(np.stack(masks))
        boxes = masks_to_boxes(stacked)
        keep = sam_batched_nms(
            boxes.float().numpy(), np.array(scores, np.float32), max(self.box_nms_thresh, self.crop_nms_thresh)
        )
        for i in keep:
            if scores[i] == 0.0:
                data["rles"][i] = masks_to_rle(stacked[i : i + 1])[0]
                data["boxes"][i] = boxes[i].numpy().astype(np.int64)
        _filter(data, keep)

    def _process_crop(
        self, image: np.ndarray, crop_box: List[int], layer: int, orig_size: Tuple[int, int], data: Dict[str, list]
    ) -> Iterator[int]:
        """Yields the number of points of each batch once it is decoded."""
        x0, y0, x1, y1 = crop_box
        crop = image[y0:y1, x0:x1, :]
        crop_h, crop_w = crop.shape[:2]
        self.predictor.set_image(crop)
        points = self.point_grids[layer] * np.array([[crop_w, crop_h]])
        crop_data: Dict[str, list] = {k: [] for k in ("rles", "boxes", "iou", "points", "stability")}
        for start in range(0, len(points), self.points_per_batch):
            batch = points[start : start + self.points_per_batch]
            with torch.no_grad():  # per batch: the generator may be resumed from another thread
                self._process_batch(batch, (crop_h, crop_w), crop_box, orig_size, crop_data)
            yield len(batch)
        self.predictor.reset_image()
        if not crop_data["rles"]:
            return
        boxes = np.concatenate(crop_data["boxes"]).astype(np.float32)
        ious = np.concatenate(crop_data["iou"])
        keep = sam_batched_nms(boxes, ious, self.box_nms_thresh)
        rles = [r for batch in crop_data["rles"] for r in batch]
        pts = np.concatenate(crop_data["points"])
        stab = np.concatenate(crop_data["stability"])
        offset = np.array([x0, y0, x0, y0])
        for i in keep:
            data["rles"].append(rles[i])
            data["boxes"].append((boxes[i] + offset).astype(np.int64))
            data["iou"].append(ious[i])
            data["points"].append(pts[i] + np.array([x0, y0]))
            data["stability"].append(stab[i])
            data["crop"].append(list(crop_box))

    def _process_batch(
        self,
        points: np.ndarray,
        im_size: Tuple[int, int],
        crop_box: List[int],
        orig_size: Tuple[int, int],
        out: Dict[str, list],
    ) -> None:
        orig_h, orig_w = orig_size
        p = self.predictor
        in_points = torch.as_tensor(p.transform.apply_coords(points, im_size), device=p.device)
        in_labels = torch.ones(in_points.shape[0], dtype=torch.int, device=p.device)
        logits, iou, _ = p.predict_torch(
            in_points[:, None, :], in_labels[:, None], multimask_output=True, return_logits=True
        )
        logits = logits.flatten(0, 1)
        iou = iou.flatten(0, 1)
        pts = np.repeat(points, iou.shape[0] // len(points), axis=0)
        keep = torch.ones_like(iou, dtype=torch.bool)
        if self.pred_iou_thresh > 0:
            keep &= iou > self.pred_iou_thresh
        stab = stability_score(logits, p.model.mask_threshold, self.stability_score_offset)
        if self.stability_score_thresh > 0:
            keep &= stab >= self.stability_score_thresh
        masks = logits[keep] > p.model.mask_threshold
        del logits
        iou, stab, pts = iou[keep], stab[keep], pts[keep.cpu().numpy()]
        boxes = masks_to_boxes(masks)
        # Drop masks cut by a crop edge that is not an image edge.
        x0, y0, _, _ = crop_box
        ub = boxes.float() + torch.tensor([x0, y0, x0, y0], device=boxes.device)
        near_crop = torch.isclose(
            ub, torch.tensor(crop_box, dtype=torch.float, device=ub.device)[None], atol=20.0, rtol=0
        )
        near_img = torch.isclose(
            ub, torch.tensor([0, 0, orig_w, orig_h], dtype=torch.float, device=ub.device)[None], atol=20.0, rtol=0
        )
        ok = ~(near_crop & ~near_img).any(dim=1)
        masks, boxes, iou, stab, pts = masks[ok], boxes[ok], iou[ok], stab[ok], pts[ok.cpu().numpy()]
        if masks.shape[0]:
            masks = self._uncrop(masks, crop_box, orig_h, orig_w)
        out["rles"].append(masks_to_rle(masks))
        out["boxes"].append(boxes.cpu().numpy())
        out["iou"].append(iou.cpu().numpy())
        out["points"].append(pts)
        out["stability"].append(stab.cpu().numpy())

    @staticmethod
    def _uncrop(masks: torch.Tensor, crop_box: List[int], orig_h: int, orig_w: int) -> torch.Tensor:
        x0, y0, x1, y1 = crop_box
        if (x0, y0, x1, y1) == (0, 0, orig_w, orig_h):
            return masks
        pad = (x0, orig_w - x1, y0, orig_h - y1)
        return torch.nn.functional.pad(masks, pad, value=False)


def _filter(data: Dict[str, list], keep: np.ndarray) -> None:
    """Keep the entries `keep` of every list in `data`, in that order."""
    for k, v in data.items():
        data[k] = [v[i] for i in keep]
