"""Batch segmentation of a folder (or a list) of images into one COCO file, resumable.

    from mobilesam_web.batch.job import SegmentJob, run_local
    job = SegmentJob("photos/", "out/", mode="everything")
    exit_code = run_local(job)          # or mobilesam_web.batch.ray_job.run_ray(job, address=None)

Layout of OUT_DIR:
    job.json                    the options the results were made with (a rerun must match them)
    results/<key>.json          one finished image (written atomically: the resume marker)
    masks/<name>/labels.png     with --png: 16-bit label map (0 = background, k = annotation k of the image)
    masks/<name>/<k>.png        with --png: one 1-bit PNG per object
    embeddings/<name>.npy       with --embeddings: 1x256x64x64 float32 image embedding (SAM web demo)
    annotations.json            the merged COCO file, written once every image was attempted
    errors.json                 images that failed this run, with the reason (exit code 1 if any)

The work per image is `Segmenter.process` (used as is by the Ray actors); the files it returns are
written by the driver (`write_result`), so workers need no access to OUT_DIR. Images are read by
whoever processes them, from their path (workers must see INPUT, e.g. on a shared disk).
"""

import hashlib
import json
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np

from ..data.image_io import MAX_PIXELS, MAX_SIDE, ImageLoadError, read_image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".tif", ".tiff", ".bmp")
MODES = ("everything", "boxes", "grid")
OUTPUT_PARTS = ("results", "masks", "embeddings", "annotations.json", "errors.json", "job.json")


class JobError(ValueError):
    """The job cannot start (bad INPUT, prompts or options); the message says why."""


@dataclass
class SegmentJob:
    """Everything that defines a batch job. `result_options()` are the options that change
    the results: a rerun into the same OUT_DIR must use the same ones (or --overwrite)."""

    input: str
    out_dir: str
    mode: str = "everything"
    prompts: Optional[str] = None
    checkpoint: Optional[str] = None
    detector_checkpoint: Optional[str] = None
    decoder_checkpoint: Optional[str] = None
    conf: float = 0.4
    iou: float = 0.9
    imgsz: int = 1024
    max_det: int = 300
    points_per_side: int = 32  # grid mode: SAM's automatic mask generator options
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    png: bool = False
    embeddings: bool = False
    overwrite: bool = False
    threads: Optional[int] = None  # intra-op threads of the engines (default: all cores)
    onnx_cache: Optional[str] = None  # default: $MOBILESAM_ONNX_CACHE, then the library's cache
    max_side: int = MAX_SIDE
    max_pixels: int = MAX_PIXELS
    progress: Optional[bool] = None  # None: a bar on a terminal, log lines otherwise

    def __post_init__(self):
        if self.mode not in MODES:
            raise JobError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.mode == "boxes" and not self.prompts:
            raise JobError(
                "--mode boxes needs --prompts PROMPTS.json (a COCO file or {file_name: [[x1,y1,x2,y2], ...]})"
            )
        if self.onnx_cache is None:
            self.onnx_cache = os.environ.get("MOBILESAM_ONNX_CACHE")

    def result_options(self) -> Dict[str, Any]:
        keys = ["mode", "checkpoint", "decoder_checkpoint", "max_side", "png", "embeddings"]
        keys += {
            "everything": ["detector_checkpoint", "conf", "iou", "imgsz", "max_det"],
            "boxes": ["prompts"],
            "grid": ["points_per_side", "pred_iou_thresh", "stability_score_thresh"],
        }[self.mode]
        return {k: getattr(self, k) for k in keys}

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------- inputs


@dataclass
class ImageItem:
    index: int  # position in the job (image id = index + 1)
    path: str  # where to read it
    file_name: str  # as written in annotations.json (relative to INPUT)
    boxes: Optional[List[Dict[str, Any]]] = None  # boxes mode: [{"box": xyxy, "id": .., "category_id": ..}]

    @property
    def key(self) -> str:
        """A file-system-safe name for this image's outputs (its own relative path when it is one)."""
        p = Path(self.file_name)
        if not p.is_absolute() and ".." not in p.parts and self.file_name.strip():
            return p.as_posix()
        return f"_outside/{hashlib.sha1(self.file_name.encode()).hexdigest()[:12]}_{p.name}"


def list_images(input_path: str, out_dir: Optional[str] = None) -> List[Tuple[str, str]]:
    """INPUT -> [(path, file_name)]: a folder (recursive, sorted by relative path, hidden entries
    and OUT_DIR skipped) or a text file of image paths (one per line, '#' comments; relative paths
    are relative to the text file's folder; order kept, duplicates dropped)."""
    src = Path(input_path)
    if src.is_dir():
        skip = Path(out_dir).resolve() if out_dir else None
        found = []
        for root, dirs, files in os.walk(src):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (Path(root, d).resolve() != skip))
            for f in files:
                if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS):
                    p = Path(root, f)
                    found.append((str(p), p.relative_to(src).as_posix()))
        return sorted(found, key=lambda t: t[1])
    if src.is_file():
        base = src.resolve().parent
        out, seen = [], set()
        for line in src.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            p = Path(line) if Path(line).is_absolute() else base / line
            try:
                name = p.resolve().relative_to(base).as_posix()
            except ValueError:
                name = str(p.resolve())
            if name not in seen:
                seen.add(name)
                out.append((str(p), name))
        return out
    raise JobError(f"INPUT {input_path!r} is neither a folder nor a text file of image paths")


def load_prompts(path: str) -> Tuple[Dict[str, List[Dict[str, Any]]], List[Dict[str, Any]]]:
    """PROMPTS.json -> ({file_name: [{"box": [x1,y1,x2,y2], "id", "category_id"}]}, categories).
    A COCO file keeps each annotation's id and category (boxes are its bbox, XYWH); a plain
    {file_name: [[x1, y1, x2, y2], ...]} gets ids in order and the one category "object"."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise JobError(f"--prompts {path}: cannot read it as JSON ({exc})") from None
    out: Dict[str, List[Dict[str, Any]]] = {}
    if isinstance(data, dict) and "annotations" in data and "images" in data:
        names = {im["id"]: im["file_name"] for im in data["images"]}
        for a in data["annotations"]:
            x, y, w, h = (float(v) for v in a["bbox"])
            out.setdefault(names[a["image_id"]], []).append(
                {"box": [x, y, x + w, y + h], "id": a.get("id"), "category_id": a.get("category_id", 1)}
            )
        cats = data.get("categories") or [{"id": 1, "name": "object"}]
        return out, cats
    if isinstance(data, dict):
        for name, boxes in data.items():
            arr = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) if len(boxes) else np.zeros((0, 4))
            if not np.all(np.isfinite(arr)) or np.any(arr[:, 2:] < arr[:, :2]):
                raise JobError(f"--prompts: boxes for {name!r} must be finite [x1, y1, x2, y2] with x2>=x1, y2>=y1")
            out[name] = [{"box": b.tolist(), "id": None, "category_id": 1} for b in arr]
        return out, [{"id": 1, "name": "object"}]
    raise JobError("--prompts must be a COCO file or {file_name: [[x1, y1, x2, y2], ...]}")


def build_items(job: SegmentJob) -> Tuple[List[ImageItem], List[Dict[str, Any]]]:
    """The job's images in order (with their prompt boxes in boxes mode) and the categories."""
    pairs = list_images(job.input, job.out_dir)
    categories = [{"id": 1, "name": "object"}]
    prompts: Dict[str, List[Dict[str, Any]]] = {}
    if job.mode == "boxes":
        prompts, categories = load_prompts(job.prompts)
        by_base: Dict[str, List[str]] = {}
        for n in prompts:
            by_base.setdefault(Path(n).name, []).append(n)
    items = []
    for i, (path, name) in enumerate(pairs):
        boxes = None
        if job.mode == "boxes":
            boxes = prompts.get(name)
            if boxes is None and len(by_base.get(Path(name).name, [])) == 1:  # prompts keyed by base name
                boxes = prompts[by_base[Path(name).name][0]]
            boxes = boxes or []
        items.append(ImageItem(i, path, name, boxes))
    return items, categories


# ---------------------------------------------------------------- the work per image


class Segmenter:
    """The engines of one worker (one ONNX Runtime engine with `threads` intra-op threads, plus the
    detector or the grid generator) and `process(item)` for one image. Built once per process
    (or per Ray actor)."""

    def __init__(self, job: SegmentJob, log: Callable[[str], None] = lambda s: None) -> None:
        import torch

        from ..engine.checkpoints import resolve_checkpoint

        self.job = job
        if job.threads:
            torch.set_num_threads(job.threads)
        ckpt = resolve_checkpoint("mobile_sam", job.checkpoint)
        self.detector = self.generator = None
        if job.mode == "grid":  # the grid generator works on torch tensors (SAM's reference algorithm)
            from ..engine.build import load_mobile_sam, load_prompt_guided_decoder
            from ..engine.predictor import SamPredictor
            from ..everything.grid import SamAutomaticMaskGenerator

            model = load_mobile_sam(ckpt)
            if job.decoder_checkpoint:
                model = load_prompt_guided_decoder(model, job.decoder_checkpoint)
            self.predictor = SamPredictor(model)
            self.generator = SamAutomaticMaskGenerator(
                self.predictor,
                points_per_side=job.points_per_side,
                pred_iou_thresh=job.pred_iou_thresh,
                stability_score_thresh=job.stability_score_thresh,
                output_mode="binary_mask",
            )
        else:
            from ..engine.onnx.predictor import OnnxSamPredictor, load_onnx_engine

            engine = load_onnx_engine(
                ckpt, job.onnx_cache, job.threads, decoder_checkpoint=job.decoder_checkpoint, log=log
            )
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
        result["worker"] = {"host": socket.gethostname(), "pid": os.getpid(), "peak_rss_mb": _peak_rss_mb()}
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


def _peak_rss_mb() -> float:
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


# ---------------------------------------------------------------- output folder


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def result_path(out_dir, item: ImageItem) -> Path:
    return Path(out_dir) / "results" / f"{item.key}.json"


def write_result(out_dir, item: ImageItem, result: Dict[str, Any], files: Dict[str, bytes]) -> None:
    """The image's files first, its result JSON last (the resume marker), each written atomically.
    Failed images get no result file: a rerun tries them again."""
    out = Path(out_dir)
    for rel, data in files.items():
        _atomic_write(out / rel, data)
    if "error" not in result:
        _atomic_write(result_path(out, item), json.dumps(result).encode())


def prepare_out_dir(job: SegmentJob, items: List[ImageItem]) -> List[ImageItem]:
    """Check / record job.json and return the items still to do (all with --overwrite)."""
    import shutil

    out = Path(job.out_dir)
    if job.overwrite:
        for part in OUTPUT_PARTS:
            p = out / part
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*/**/.*.tmp"):  # half-written files of a killed run: never read, dropped
        stale.unlink(missing_ok=True)
    meta = out / "job.json"
    options = job.result_options()
    if meta.exists():
        previous = json.loads(meta.read_text()).get("options")
        if previous != options:
            changed = sorted(k for k in set(previous or {}) | set(options) if (previous or {}).get(k) != options.get(k))
            raise JobError(
                f"{out} holds results made with other options ({', '.join(changed)}); "
                "use --overwrite to start again, or another --out"
            )
    else:
        _atomic_write(meta, json.dumps({"options": options}, indent=1).encode())
    return [it for it in items if not result_path(out, it).exists()]


def merge(job: SegmentJob, items: List[ImageItem], categories, errors: List[Dict[str, Any]]) -> Dict[str, Any]:
    """results/*.json -> annotations.json (images in job order, ids 1..N; annotation ids in order,
    or the prompts' ids in boxes mode) and errors.json. Returns the COCO dict."""
    out = Path(job.out_dir)
    images, anns = [], []
    next_id = 1
    used = {p["id"] for it in items for p in (it.boxes or []) if p.get("id") is not None}
    for it in items:
        rp = result_path(out, it)
        if not rp.exists():
            continue
        r = json.loads(rp.read_text())
        image_id = it.index + 1
        images.append({"id": image_id, "file_name": it.file_name, "width": r["width"], "height": r["height"]})
        for a in r["annotations"]:
            if a.get("id") is None:
                while next_id in used:
                    next_id += 1
                a["id"] = next_id
                used.add(next_id)
            anns.append({"id": a.pop("id"), "image_id": image_id, **a})
    coco = {
        "info": {"description": f"mobilesam-web segment --mode {job.mode}", "options": job.result_options()},
        "images": images,
        "categories": categories,
        "annotations": anns,
    }
    _atomic_write(out / "annotations.json", json.dumps(coco).encode())
    _atomic_write(out / "errors.json", json.dumps(sorted(errors, key=lambda e: e["index"]), indent=1).encode())
    return coco


# ---------------------------------------------------------------- progress and the local loop


class Progress:
    """images done / total, images/s and ETA: a bar on a terminal, log lines otherwise."""

    def __init__(self, total: int, skipped: int, tty: Optional[bool] = None, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.total, self.done, self.failed, self.skipped = total, 0, 0, skipped
        self.t0 = time.perf_counter()
        if skipped:
            self._line(f"{skipped} images already done in this folder (skipped); {total} to do")

    def _line(self, s: str) -> None:
        print(s, file=self.stream, flush=True)

    def update(self, result: Dict[str, Any]) -> None:
        self.done += 1
        self.failed += "error" in result
        dt = time.perf_counter() - self.t0
        rate = self.done / dt if dt > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        stats = f"{self.done}/{self.total} images, {rate:.2f} img/s, ETA {eta:.0f}s"
        if self.failed:
            stats += f", {self.failed} failed"
        if self.tty:
            width = 30
            fill = int(width * self.done / max(self.total, 1))
            print(f"\r[{'#' * fill}{'.' * (width - fill)}] {stats}", end="", file=self.stream, flush=True)
            if self.done == self.total:
                print(file=self.stream, flush=True)
        else:
            what = f"FAILED: {result['error']}" if "error" in result else f"{len(result['annotations'])} objects"
            self._line(f"[{stats}] {result['file_name']}: {what}")


def _sequential(items: List[ImageItem], seg: Segmenter) -> Iterable[Tuple[ImageItem, Tuple]]:
    """Process items in order, one at a time (the engines already use every thread they are given)."""
    for it in items:
        yield it, seg.process(it)


def run_job(
    job: SegmentJob,
    process_all: Callable[[List[ImageItem]], Iterable[Tuple[ImageItem, Tuple]]],
    log: Callable[[str], None] = print,
) -> int:
    """The shared driver: list, skip finished, process (by the given function), write each result as
    it arrives, merge. Exit code: 0, 1 if any image failed, 130 if interrupted."""
    items, categories = build_items(job)
    if not items:
        raise JobError(f"no images found in {job.input} ({', '.join(IMAGE_EXTENSIONS)})")
    todo = prepare_out_dir(job, items)
    progress = Progress(len(todo), len(items) - len(todo), job.progress)
    errors: List[Dict[str, Any]] = []
    try:
        for it, (result, files) in process_all(todo):
            write_result(job.out_dir, it, result, files)
            if "error" in result:
                errors.append({"index": it.index, "file_name": it.file_name, "path": it.path, "error": result["error"]})
            progress.update(result)
    except KeyboardInterrupt:
        log(f"\ninterrupted: {progress.done} of {len(todo)} images written; rerun the same command to resume")
        return 130
    coco = merge(job, items, categories, errors)
    log(
        f"{len(coco['images'])} images, {len(coco['annotations'])} annotations -> "
        f"{Path(job.out_dir) / 'annotations.json'}"
    )
    if errors:
        log(f"{len(errors)} images failed: see {Path(job.out_dir) / 'errors.json'}")
    return 1 if errors else 0


def run_local(job: SegmentJob, log: Callable[[str], None] = print) -> int:
    """The job in this process, one image at a time, the engines using `job.threads` threads."""
    items, _ = build_items(job)  # fail fast on bad INPUT / prompts before loading the engines
    if not items:
        raise JobError(f"no images found in {job.input} ({', '.join(IMAGE_EXTENSIONS)})")
    seg = Segmenter(job, log=log)
    return run_job(job, lambda todo: _sequential(todo, seg), log=log)
