"""Downloads for both tabs: COCO JSON (RLE + polygons), a label map, and every object's mask
(and cut-out), named so that Gradio's file list, which cuts the end of long names, still shows
what each file is: object number and kind first, then a short stem of the image's name.

- `coco_<stem>.json`   every object; bboxes are the tight boxes of the masks
- `labels_<stem>.png`  pixel value i = object i (annotation id i); 16-bit above 255 objects
- few objects:  `01_mask_<stem>.png`, `01_cutout_<stem>.png` (number first: the
  file list shortens the end of long names), ... one file each
- many objects: `masks_<stem>.zip` holding `mask001.png` (and `cutout001.png`) for every object

Nothing is dropped: every object is in every file. Writing is fast (1-bit mask PNGs, an
uncompressed zip of already-compressed PNGs): hundreds of objects take about a second.
"""

import json
import os
import re
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, TextIO, Tuple

import cv2
import numpy as np

from ..data.boxes import inclusive_xyxy_to_xywh
from ..data.masks import MaskLike, as_crop, coco_annotations, cutout_png, mask_png

STEM_CHARS = 24  # long enough to recognise the image, short enough to show in full
SEPARATE_FILES = 10  # up to this many objects, each mask is its own download; beyond, one zip
FOLDER_PREFIX = "mobilesam-export-"
FOLDER_MAX_AGE = 3600.0  # s; Gradio serves copies from its own cache (which it expires itself)


@dataclass
class Export:
    """What was written: the files to offer and what they hold."""

    paths: List[str] = field(default_factory=list)
    objects: int = 0
    masks_zipped: bool = False
    cutouts: bool = False

    @property
    def summary(self) -> str:
        """One line for the page, e.g. '3 objects: COCO JSON, label map, 3 masks + 3 cut-outs'."""
        n = self.objects
        plural = "" if n == 1 else "s"
        parts = ["COCO JSON", "label map"]
        if n:
            what = f"{n} mask{plural}" + (f" + {n} cut-out{plural}" if self.cutouts else "")
            parts.append(what + (" (zip)" if self.masks_zipped else ""))
        return f"{n} object{plural}: " + ", ".join(parts)


def file_stem(name: str, limit: int = STEM_CHARS) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.splitext(os.path.basename(name or "image"))[0])
    return stem.strip("._")[:limit].rstrip("._") or "image"


def records_from_masks(masks: List[MaskLike], scores: List[float]) -> List[Dict[str, Any]]:
    """Export records of masks (MaskCrops, RLE or full arrays) and their scores."""
    records = []
    for m, s in zip(masks, scores):
        crop = as_crop(m)
        records.append(
            {
                "segmentation": m,
                "area": 0 if crop is None else crop.area,
                "bbox": [0, 0, 0, 0] if crop is None else inclusive_xyxy_to_xywh(crop.bounds),
                "predicted_iou": float(s),
            }
        )
    return records


def prune_export_folders(max_age: float = FOLDER_MAX_AGE, now: Optional[float] = None) -> int:
    """Remove our export folders older than `max_age` seconds; returns how many. Gradio copies
    the files it offers into its cache when the handler returns, so the originals are only
    needed for moments; without this they would pile up in the temp folder forever."""
    now = time.time() if now is None else now
    removed = 0
    root = tempfile.gettempdir()
    for entry in os.scandir(root):
        try:
            if (
                entry.name.startswith(FOLDER_PREFIX)
                and entry.is_dir(follow_symlinks=False)
                and now - entry.stat(follow_symlinks=False).st_mtime > max_age
            ):
                shutil.rmtree(entry.path, ignore_errors=True)
                removed += 1
        except OSError:  # another process removed it first
            continue
    return removed


def dump_json(data: Dict[str, Any], f: TextIO) -> None:
    """`json.dump(data, f)`, byte for byte, with the C encoder of `json.dumps` (json.dump's
    pure-Python one takes ~10x longer: 30 s for an export of a few hundred noisy masks), one list
    item at a time, so the file is never whole in memory."""
    f.write("{")
    for i, (key, value) in enumerate(data.items()):
        f.write((", " if i else "") + json.dumps(key) + ": ")
        if isinstance(value, list):
            f.write("[")
            for j, item in enumerate(value):
                f.write((", " if j else "") + json.dumps(item))
            f.write("]")
        else:
            f.write(json.dumps(value))
    f.write("}")


def write_exports(
    image: np.ndarray,
    records: List[Dict[str, Any]],
    name: str,
    cutouts: bool = True,
    size: Optional[Tuple[int, int]] = None,
    separate_files: int = SEPARATE_FILES,
) -> Export:
    """Write the downloads of `records` into a fresh temp folder. Masks are in `size` (the
    user's image, default the image's own size); cut-outs are cut from `image`."""
    prune_export_folders()
    folder = tempfile.mkdtemp(prefix=FOLDER_PREFIX)
    stem = file_stem(name)
    size = tuple(size or image.shape[:2])
    out = Export(objects=len(records), cutouts=cutouts)

    def path(filename: str) -> str:
        p = os.path.join(folder, filename)
        out.paths.append(p)
        return p

    coco = coco_annotations(records, size, file_name=os.path.basename(name or "image.png"))
    with open(path(f"coco_{stem}.json"), "w") as f:
        dump_json(coco, f)
    masks = [r["segmentation"] for r in records]
    if not masks:
        return out
    # one mask's box at a time: never every object as a full-size array
    labels = np.zeros(size, np.uint16 if len(masks) > 255 else np.uint8)
    for i, m in enumerate(masks, 1):  # later objects on top
        crop = as_crop(m)
        if crop is not None:
            x0, y0, x1, y1 = crop.bounds
            labels[y0 : y1 + 1, x0 : x1 + 1][crop.crop] = i
    cv2.imwrite(path(f"labels_{stem}.png"), labels, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    del labels
    if len(masks) <= separate_files:
        for i, m in enumerate(masks, 1):
            with open(path(f"{i:02d}_mask_{stem}.png"), "wb") as f:
                f.write(mask_png(m, size))
            if cutouts:
                with open(path(f"{i:02d}_cutout_{stem}.png"), "wb") as f:
                    f.write(cutout_png(image, m))
        return out
    out.masks_zipped = True
    # PNGs are compressed already: storing them is as small and much faster than deflating
    with zipfile.ZipFile(path(f"masks_{stem}.zip"), "w", zipfile.ZIP_STORED) as z:
        for i, m in enumerate(masks, 1):
            z.writestr(f"mask{i:03d}.png", mask_png(m, size))
            if cutouts:
                z.writestr(f"cutout{i:03d}.png", cutout_png(image, m))
    return out
