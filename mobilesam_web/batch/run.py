"""Running a batch job: the output folder (atomic results, resume, the merged COCO file),
progress, and the local run (the Ray run: ray_job.py)."""

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from .job import IMAGE_EXTENSIONS, OUTPUT_PARTS, ImageItem, JobError, SegmentJob, build_items
from .segmenter import Segmenter

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
        # an option an older job.json lacks counts as its default (None), so old jobs still resume
        changed = sorted(k for k in set(previous or {}) | set(options) if (previous or {}).get(k) != options.get(k))
        if changed:
            raise JobError(
                f"{out} holds results made with other options ({', '.join(changed)}); "
                "use --overwrite to start again, or another --out"
            )
    else:
        _atomic_write(meta, json.dumps({"options": options}, indent=1).encode())
    return [it for it in items if not result_path(out, it).exists()]


def merge(job: SegmentJob, items: List[ImageItem], categories, errors: List[Dict[str, Any]]) -> Dict[str, Any]:
    """results/*.json -> annotations.json (images in job order, ids 1..N, or a COCO prompts
    file's own; annotation ids in order, or the prompts' ids in boxes mode) and errors.json.
    Returns the COCO dict."""
    out = Path(job.out_dir)
    images, anns = [], []
    next_id = 1
    used = {p["id"] for it in items for p in (it.boxes or []) if p.get("id") is not None}
    # image ids: a COCO prompts file's own; the other images the free ones from 1, in job order
    taken = {it.image_id for it in items if it.image_id is not None}
    image_ids, free = {}, 1
    for it in items:
        if it.image_id is None:
            while free in taken:
                free += 1
            taken.add(free)
        image_ids[it.index] = it.image_id if it.image_id is not None else free
    for it in items:
        rp = result_path(out, it)
        if not rp.exists():
            continue
        r = json.loads(rp.read_text())
        image_id = image_ids[it.index]
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
    unmatched: List[Dict[str, Any]] = []
    items, categories = build_items(job, unmatched)
    if not items:
        raise JobError(f"no images found in {job.input} ({', '.join(IMAGE_EXTENSIONS)})")
    todo = prepare_out_dir(job, items)
    progress = Progress(len(todo), len(items) - len(todo), job.progress)
    for u in unmatched:
        log(f"warning: {u['error']}")
    errors: List[Dict[str, Any]] = list(unmatched)
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
    failed = len(errors) - len(unmatched)
    if failed:
        log(f"{failed} images failed: see {Path(job.out_dir) / 'errors.json'}")
    if unmatched:
        log(f"{len(unmatched)} prompt keys match no image: see {Path(job.out_dir) / 'errors.json'}")
    return 1 if errors else 0


def run_local(job: SegmentJob, log: Callable[[str], None] = print) -> int:
    """The job in this process, one image at a time, the engines using `job.threads` threads."""
    items, _ = build_items(job)  # fail fast on bad INPUT / prompts before loading the engines
    if not items:
        raise JobError(f"no images found in {job.input} ({', '.join(IMAGE_EXTENSIONS)})")
    seg = Segmenter(job, log=log)
    return run_job(job, lambda todo: _sequential(todo, seg), log=log)
