"""Segment everything: SAM's 32x32 grid vs MobileSAMv2 box prompts, one run, same image.

    python bench/bench_everything.py [--grid-points 32] [--boxes 100] [--threads 2] [--photo-boxes 300]

- grid: `SamAutomaticMaskGenerator` on the torch engine = the official algorithm (its decoder
  stage is what took 129 s with the official code on this machine);
- boxes: the ONNX engine's batched box decoder over the detector's boxes;
- detector: a YOLOv8x-size network (the size of the real ObjectAwareModel.pt) with random
  weights, built from the fixture checkpoint's yaml at scale x, to time it realistically; the
  boxes come from the fixture detector (random weights give arbitrary counts), cut to --boxes;
- a 12 MP photo: /everything's path on a 4000x3000 JPEG with --photo-boxes boxes, against the
  same boxes with masks at the working copy's size, with peak RSS (VmHWM) of each.
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mobilesam_web import (  # noqa: E402
    ObjectAwareDetector,
    SamAutomaticMaskGenerator,
    SamPredictor,
    SegmentEverything,
    build_mobile_sam,
)
from mobilesam_web.engine.modeling.yolo import YOLOv8  # noqa: E402
from mobilesam_web.engine.onnx.predictor import OnnxSamPredictor, load_onnx_engine  # noqa: E402

from common import FIXTURES as FIX  # noqa: E402
from common import peak_rss_mb as rss_mb


class FixedBoxes:
    """Times a real-size detector, returns precomputed boxes."""

    def __init__(self, big: ObjectAwareDetector, boxes, scores):
        self.big, self.boxes, self.scores = big, boxes, scores

    def __call__(self, image, **kw):
        self.big(image, **kw)
        return self.boxes, self.scores


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", default=str(FIX / "mobilesam_parity" / "weights_fp16.pt"))
    ap.add_argument("--detector", default=str(FIX / "objectaware_parity" / "objectaware_random.pt"))
    ap.add_argument("--image", default=str(FIX / "objectaware_parity" / "image.png"))
    ap.add_argument("--grid-points", type=int, default=32)
    ap.add_argument("--boxes", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--photo-boxes", type=int, default=300, help="boxes in the 12 MP photo run (0: skip it)")
    ap.add_argument(
        "--detector-backend",
        choices=["torch", "onnxruntime"],
        default="torch",
        help="torch (channels_last, what the app uses) or onnxruntime",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    image = np.array(Image.open(args.image).convert("RGB"))

    small = ObjectAwareDetector.from_checkpoint(args.detector)
    boxes, scores = small(image)
    boxes, scores = boxes[: args.boxes], scores[: args.boxes]
    from mobilesam_web.engine.safe_unpickle import load_ultralytics_checkpoint

    cfg = load_ultralytics_checkpoint(args.detector)["model"].yaml
    cfg = {**cfg, "scale": "x"}
    torch.manual_seed(0)
    big_net = YOLOv8(cfg, reg_max=26).fuse().eval()
    big = ObjectAwareDetector(big_net)
    if args.detector_backend == "onnxruntime":
        big.use_onnxruntime(cache_dir="/tmp/mobilesam-bench-onnx", threads=args.threads)
    n_params = sum(p.numel() for p in big_net.parameters()) / 1e6

    # Box prompts (ONNX engine).
    engine = load_onnx_engine(args.checkpoint, threads=args.threads)
    engine.cache.max_bytes = 0
    se = SegmentEverything(OnnxSamPredictor(engine), FixedBoxes(big, boxes, scores))
    se.generate(image)  # warm-up (sessions, first-run allocations)
    t0 = time.perf_counter()
    recs = se.generate(image)
    box_total = time.perf_counter() - t0
    box_t = dict(se.timings)
    rss_box = rss_mb()

    # Grid (torch engine, the official algorithm).
    model = build_mobile_sam(args.checkpoint)
    pred = SamPredictor(model)
    gen = SamAutomaticMaskGenerator(pred, points_per_side=args.grid_points)
    t0 = time.perf_counter()
    pred.set_image(image)
    grid_encode = time.perf_counter() - t0
    pred.set_image = lambda img: None  # reuse the embedding: time the decoder stage alone
    t0 = time.perf_counter()
    grid_recs = gen.generate(image)
    grid_decode = time.perf_counter() - t0
    grid_total = grid_encode + grid_decode

    n = int(box_t["boxes"])
    print(f"image {image.shape[1]}x{image.shape[0]}, {args.threads} threads")
    print(f"detector: YOLOv8x-size ({n_params:.1f}M params, random weights), {args.detector_backend}")
    print(
        f"box prompts ({n} boxes, ONNX engine): total {box_total:.2f} s = encode {box_t['encode']:.2f} + "
        f"detect {box_t['detect']:.2f} + decode {box_t['decode']:.2f} ({box_t['decode'] / max(n, 1) * 1e3:.1f} ms/box) "
        f"+ postprocess {box_t['postprocess']:.2f}; {len(recs)} masks"
    )
    print(
        f"grid {args.grid_points}x{args.grid_points} ({args.grid_points**2 * 3} masks, torch engine = official "
        f"algorithm): total {grid_total:.1f} s = encode {grid_encode:.2f} + decode/filter {grid_decode:.1f}; "
        f"{len(grid_recs)} masks kept"
    )
    print(
        f"ratio decoder stage: grid {grid_decode:.1f} s / boxes {box_t['decode'] + box_t['postprocess']:.2f} s = "
        f"{grid_decode / (box_t['decode'] + box_t['postprocess']):.1f}x"
    )
    print(f"ratio end to end: {grid_total / box_total:.1f}x (official grid measured 129 s on this machine)")
    print(f"peak RSS: {rss_box:.0f} MB after box prompts, {rss_mb():.0f} MB after the grid")
    if args.photo_boxes:
        photo_run(engine, big, args.image, args.photo_boxes)


def photo_run(engine, big: ObjectAwareDetector, image_path: str, n_boxes: int) -> None:
    """A 12 MP phone photo (4000x3000 JPEG) as /everything runs it: read (downscaled to 2048
    for the work), detect, decode, masks at the photo's size as RLE, COCO with polygons. The
    baseline in the same run: the same boxes with masks at the working copy's size (2048x1536)."""
    import io

    from mobilesam_web.data.image_io import read_image
    from mobilesam_web.data.masks import coco_annotations

    buf = io.BytesIO()
    Image.open(image_path).convert("RGB").resize((4000, 3000), Image.BILINEAR).save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    small = ObjectAwareDetector.from_checkpoint(
        str(FIX / "objectaware_parity" / "objectaware_random.pt")
    )  # random weights: boxes from a low confidence, cut to n_boxes
    work = read_image(data).image
    boxes, scores = small(work, conf=0.05, max_det=n_boxes)

    def run(size):
        reset_peak()
        t0 = time.perf_counter()
        loaded = read_image(data)
        se = SegmentEverything(OnnxSamPredictor(engine), FixedBoxes(big, boxes, scores), output_mode="coco_rle")
        recs = se.generate(loaded.image, output_size=size or loaded.original_size)
        t_coco = time.perf_counter()
        coco = coco_annotations(recs, size or loaded.original_size)
        t_end = time.perf_counter()
        return t_end - t0, t_end - t_coco, se.timings, len(coco["annotations"]), growth_mb()

    base = run(work.shape[:2])
    photo = run(None)
    for name, (total, t_coco, t, n, grown) in (("2048x1536 (baseline)", base), ("4000x3000 photo", photo)):
        print(
            f"everything, {name}: {total:.2f} s end to end = encode {t['encode']:.2f} + detect {t['detect']:.2f} + "
            f"decode {t['decode']:.2f} + masks as RLE {t['postprocess']:.2f} + COCO/polygons {t_coco:.2f}; "
            f"{n} objects from {int(t['boxes'])} boxes; peak RSS +{grown:.0f} MB"
        )
    print(
        f"ratio 12 MP / working size: {photo[0] / base[0]:.2f}x time (goal: 12 MP with ~300 boxes <= 15 s, <= 1.2 GB)"
    )


def reset_peak() -> None:
    """Reset this process' peak RSS (VmHWM) to its current RSS (Linux)."""
    global _start_rss
    Path("/proc/self/clear_refs").write_text("5")
    _start_rss = _status_kb("VmRSS")


def growth_mb() -> float:
    return (_status_kb("VmHWM") - _start_rss) / 1024


def _status_kb(field: str) -> int:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field + ":"))
    return int(line.split()[1])


_start_rss = 0


if __name__ == "__main__":
    main()
