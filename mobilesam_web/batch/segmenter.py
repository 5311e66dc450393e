"""One image's segmentation in a batch job: `Segmenter.process` (run as is by the Ray actors)
returns the image's COCO annotations and the files to write; it never touches OUT_DIR."""

import os
import socket
import time
from typing import Any, Callable, Dict, List, Tuple

import numpy as np

from ..data.image_io import ImageLoadError, read_image
from .job import ImageItem, SegmentJob


class Segmenter:
    """The engines of one worker (one ONNX Runtime engine with `threads` intra-op threads, plus the
    detector or the grid generator) and `process(item)` for one image. Built once per process
    (or per Ray actor)."""

    def __init__(self, job: SegmentJob, log: Callable[[str], None] = lambda s: None) -> None:
        import torch

        from ..engine.checkpoints import resolve_checkpoint, resolve_model

        self.job = job
        if job.threads:
            torch.set_num_threads(job.threads)
        ckpt, decoder = resolve_model(job.model, job.checkpoint, job.decoder_checkpoint)
        self.detector = self.generator = None
        if job.mode == "grid":  # the grid generator works on torch tensors (SAM's reference algorithm)
            from ..engine.build import load_mobile_sam
            from ..engine.predictor import SamPredictor
            from ..everything.grid import SamAutomaticMaskGenerator

            self.predictor = SamPredictor(load_mobile_sam(ckpt, decoder))
            self.generator = SamAutomaticMaskGenerator(
                self.predictor,
                points_per_side=job.points_per_side,
                pred_iou_thresh=job.pred_iou_thresh,
                stability_score_thresh=job.stability_score_thresh,
                output_mode="binary_mask",
            )
        else:
            from ..engine.onnx.predictor import OnnxSamPredictor, load_onnx_engine

            engine = load_onnx_engine(ckpt, job.onnx_cache, job.threads, decoder_checkpoint=decoder, log=log)
            engine.cache.max_bytes = 0  # every image is new: keep no embeddings around
            self.predictor = OnnxSamPredictor(engine)
            if job.mode == "everything":
                from ..everything.detector import ObjectAwareDetector
                from ..everything.pipeline import SegmentEverything

                self.detector = ObjectAwareDetector.from_checkpoint(
                    resolve_checkpoint("object_aware", job.detector_checkpoint)
                )
                self.everything = SegmentEverything(
                    self.predictor,
                    self.detector,
                    imgsz=job.imgsz,
                    conf=job.conf,
                    iou=job.iou,
                    max_det=job.max_det,
                    output_mode="coco_rle",
                )

    def process(self, item: ImageItem) -> Tuple[Dict[str, Any], Dict[str, bytes]]:
        """One image -> (result, files). result: {"index", "file_name", "width", "height",
        "annotations"} or {"index", "file_name", "error"}; files: {path relative to OUT_DIR: bytes}."""
        t0 = time.perf_counter()
        try:
            loaded = read_image(item.path, self.job.max_side, self.job.max_pixels)
            records = self._records(loaded, item)
            result, files = self._package(loaded, item, records)
        except ImageLoadError as exc:
            return {"index": item.index, "file_name": item.file_name, "error": str(exc)}, {}
        except MemoryError:
            return {"index": item.index, "file_name": item.file_name, "error": "out of memory on this image"}, {}
        except Exception as exc:  # one bad image must not stop the job
            return {
                "index": item.index,
                "file_name": item.file_name,
                "error": f"{type(exc).__name__}: {str(exc)[:300]}",
            }, {}
        result["seconds"] = round(time.perf_counter() - t0, 3)
        # who made it and at what memory cost (for sizing workers; not part of annotations.json)
        result["worker"] = {"host": socket.gethostname(), "pid": os.getpid(), "peak_rss_mb": peak_rss_mb()}
        return result, files

    def _records(self, loaded, item: ImageItem) -> List[Dict[str, Any]]:
        image, scale, (oh, ow) = loaded
        job = self.job
        if job.mode == "everything":
            return self.everything.generate(image, output_size=(oh, ow))
        if job.mode == "grid":
            import cv2

            from ..data.rle import mask_to_coco_rle

            records = self.generator.generate(image)
            for r in records:  # one full-size mask at a time, kept as RLE
                m = r["segmentation"]
                if (oh, ow) != image.shape[:2]:  # worked on a downscaled copy: back in the image's pixels
                    m = cv2.resize(m.astype(np.uint8), (ow, oh), interpolation=cv2.INTER_NEAREST).astype(bool)
                    r["area"] = int(m.sum())
                r["segmentation"] = mask_to_coco_rle(m)
            return records
        # boxes: each prompt box -> one mask (multimask_output=False), in the image's own pixels
        from ..data.boxes import inclusive_xyxy_to_xywh
        from ..data.rle import crop_to_coco_rle
        from ..data.upscale import MaskCrop, mask_crop_from_low_res
        from ..everything.pipeline import _low_res_stability

        prompts = item.boxes or []
        if not prompts:
            if job.embeddings:
                self.predictor.set_image(image)
            return []
        self.predictor.set_image(image)
        boxes = np.array([p["box"] for p in prompts], dtype=np.float64) * scale
        _, iou, low = self.predictor.predict_boxes(boxes, low_res_only=True)
        low, iou = low[:, 0], iou[:, 0]
        stab = _low_res_stability(low)
        records = []
        for i, p in enumerate(prompts):
            crop = mask_crop_from_low_res(low[i], self.predictor.input_size, (oh, ow))
            crop = crop or MaskCrop(0, 0, np.zeros((0, 0), bool), (oh, ow))
            records.append(
                {
                    "segmentation": crop_to_coco_rle(crop),
                    "area": crop.area,
                    "bbox": inclusive_xyxy_to_xywh(crop.bounds) if crop.area else [0, 0, 0, 0],
                    "predicted_iou": float(iou[i]),
                    "stability_score": float(stab[i]),
                    "prompt_box": [float(v) for v in p["box"]],
                }
            )
        return records

    def _package(self, loaded, item: ImageItem, records) -> Tuple[Dict[str, Any], Dict[str, bytes]]:
        from ..data.masks import coco_annotations

        _, _, (oh, ow) = loaded
        coco = coco_annotations(records, (oh, ow), item.file_name)
        anns = []
        for k, (a, r) in enumerate(zip(coco["annotations"], records)):
            a.pop("image_id")
            a["id"] = None  # numbered in the merge, across images
            a["score"] = a.get("predicted_iou")
            if self.job.mode == "grid":
                a["point_coords"] = [[float(v) for v in pt] for pt in r.get("point_coords", [])]
            if self.job.mode == "boxes":  # keep the prompt's id and category
                p = item.boxes[k]
                a["id"], a["category_id"] = p["id"], p["category_id"]
            anns.append(a)
        files: Dict[str, bytes] = {}
        if self.job.png:
            files.update(_png_files(item.key, [r["segmentation"] for r in records], (oh, ow)))
        if self.job.embeddings:
            if not getattr(self.predictor, "is_image_set", False):  # the grid generator resets its image
                self.predictor.set_image(loaded.image)
            emb = self.predictor.get_image_embedding()
            emb = emb.numpy() if hasattr(emb, "numpy") else np.asarray(emb)
            files[f"embeddings/{item.key}.npy"] = _npy_bytes(emb.astype(np.float32).reshape(1, 256, 64, 64))
        return {
            "index": item.index,
            "file_name": item.file_name,
            "width": int(ow),
            "height": int(oh),
            "annotations": anns,
        }, files


def peak_rss_mb() -> float:
    try:
        import resource

        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux
    except (ImportError, OSError):  # not on Windows
        return 0.0


def _png_files(key: str, segs, size) -> Dict[str, bytes]:
    import cv2

    from ..data.masks import as_crop, mask_png

    labels = np.zeros(size, np.uint16)
    files = {}
    for k, seg in enumerate(segs, 1):  # records come largest first: smaller objects stay on top
        crop = as_crop(seg)  # one mask's box at a time
        if crop is not None:
            x0, y0, x1, y1 = crop.bounds
            labels[y0 : y1 + 1, x0 : x1 + 1][crop.crop] = k
        files[f"masks/{key}/{k}.png"] = mask_png(seg, size)
    ok, buf = cv2.imencode(".png", labels)
    files[f"masks/{key}/labels.png"] = buf.tobytes()
    return files


def _npy_bytes(a: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()
