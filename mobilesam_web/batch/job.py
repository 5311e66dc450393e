"""Batch segmentation of a folder (or a list) of images into one COCO file, resumable.

    from mobilesam_web.batch.job import SegmentJob
    from mobilesam_web.batch.run import run_local
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..data.image_io import MAX_PIXELS, MAX_SIDE

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
    model: Optional[str] = None  # `--model NAME` (engine.checkpoints.MODELS) when no checkpoint is given
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
        keys = ["mode", "checkpoint", "model", "decoder_checkpoint", "max_side", "png", "embeddings"]
        keys += {
            "everything": ["detector_checkpoint", "conf", "iou", "imgsz", "max_det"],
            "boxes": ["prompts"],
            "grid": ["points_per_side", "pred_iou_thresh", "stability_score_thresh"],
        }[self.mode]
        return {k: getattr(self, k) for k in keys}

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_args(cls, args: Any) -> "SegmentJob":
        """The job `mobilesam-web segment`'s parsed arguments describe (cli.segment_parser)."""
        same = ["mode", "prompts", "checkpoint", "model", "detector_checkpoint", "decoder_checkpoint", "conf", "iou"]
        same += ["imgsz", "max_det", "points_per_side", "pred_iou_thresh", "png", "embeddings", "overwrite"]
        job = cls(
            args.input,
            args.out,
            **{k: getattr(args, k) for k in same + ["threads", "onnx_cache"]},
            stability_score_thresh=args.stability_thresh,
            progress=False if args.no_progress else None,
        )
        if args.max_image_side:
            job.max_side = args.max_image_side
        return job


# ---------------------------------------------------------------- inputs


@dataclass
class ImageItem:
    index: int  # position in the job
    path: str  # where to read it
    file_name: str  # as written in annotations.json (relative to INPUT)
    boxes: Optional[List[Dict[str, Any]]] = None  # boxes mode: [{"box": xyxy, "id": .., "category_id": ..}]
    image_id: Optional[int] = None  # a COCO prompts file's id for this image (else one is given)

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


def load_prompts(
    path: str,
) -> Tuple[Dict[str, List[Dict[str, Any]]], List[Dict[str, Any]], Dict[str, int]]:
    """PROMPTS.json -> ({file_name: [{"box": [x1,y1,x2,y2], "id", "category_id"}]}, categories,
    {file_name: image id}). A COCO file keeps its image ids and each annotation's id and category
    (boxes are its bbox, XYWH); a plain {file_name: [[x1, y1, x2, y2], ...]} gets ids in order and
    the one category "object"."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise JobError(f"--prompts {path}: cannot read it as JSON ({exc})") from None
    out: Dict[str, List[Dict[str, Any]]] = {}
    if isinstance(data, dict) and "annotations" in data and "images" in data:
        names = {im["id"]: im["file_name"] for im in data["images"]}
        for name in names.values():  # an image without annotations is still a prompt (none)
            out.setdefault(name, [])
        for a in data["annotations"]:
            x, y, w, h = (float(v) for v in a["bbox"])
            out.setdefault(names[a["image_id"]], []).append(
                {"box": [x, y, x + w, y + h], "id": a.get("id"), "category_id": a.get("category_id", 1)}
            )
        cats = data.get("categories") or [{"id": 1, "name": "object"}]
        ids = {name: int(i) for i, name in names.items() if isinstance(i, int) and not isinstance(i, bool)}
        return out, cats, ids
    if isinstance(data, dict):
        for name, boxes in data.items():
            arr = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) if len(boxes) else np.zeros((0, 4))
            if not np.all(np.isfinite(arr)) or np.any(arr[:, 2:] < arr[:, :2]):
                raise JobError(f"--prompts: boxes for {name!r} must be finite [x1, y1, x2, y2] with x2>=x1, y2>=y1")
            out[name] = [{"box": b.tolist(), "id": None, "category_id": 1} for b in arr]
        return out, [{"id": 1, "name": "object"}], {}
    raise JobError("--prompts must be a COCO file or {file_name: [[x1, y1, x2, y2], ...]}")


def build_items(
    job: SegmentJob, unmatched: Optional[List[Dict[str, Any]]] = None
) -> Tuple[List[ImageItem], List[Dict[str, Any]]]:
    """The job's images in order (with their prompt boxes in boxes mode) and the categories.
    Prompt keys that match no image are appended to `unmatched` (with a did-you-mean)."""
    pairs = list_images(job.input, job.out_dir)
    categories = [{"id": 1, "name": "object"}]
    prompts: Dict[str, List[Dict[str, Any]]] = {}
    ids: Dict[str, int] = {}
    used = set()
    if job.mode == "boxes":
        prompts, categories, ids = load_prompts(job.prompts)
        by_base: Dict[str, List[str]] = {}
        for n in prompts:
            by_base.setdefault(Path(n).name, []).append(n)
    items = []
    for i, (path, name) in enumerate(pairs):
        boxes, key = None, None
        if job.mode == "boxes":
            key = name if name in prompts else None
            if key is None and len(by_base.get(Path(name).name, [])) == 1:  # prompts keyed by base name
                key = by_base[Path(name).name][0]
            used.add(key)
            boxes = prompts.get(key) or []
        items.append(ImageItem(i, path, name, boxes, ids.get(key) if key is not None else None))
    if unmatched is not None:
        names = [name for _, name in pairs]
        for key in prompts:
            if key not in used:
                unmatched.append(unmatched_prompt(key, names))
    return items, categories


def unmatched_prompt(key: str, names: List[str]) -> Dict[str, Any]:
    """errors.json's entry for a prompts key that names no image of INPUT, with a did-you-mean."""
    import difflib

    lower = {n.lower(): n for n in names}
    guess = lower.get(key.lower()) or lower.get(Path(key).name.lower())
    if guess is None:
        close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
        guess = close[0] if close else None
    entry: Dict[str, Any] = {
        "index": -1,
        "prompt_key": key,
        "error": f"the prompts for {key!r} match no image in INPUT" + (f" (did you mean {guess!r}?)" if guess else ""),
    }
    if guess:
        entry["did_you_mean"] = guess
    return entry


# ---------------------------------------------------------------- the work per image
