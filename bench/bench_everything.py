"""Segment everything: SAM's 32x32 grid vs MobileSAMv2 box prompts, one run, same image.

    python bench/bench_everything.py [--grid-points 32] [--boxes 100] [--threads 2]

- grid: `SamAutomaticMaskGenerator` on the torch engine = the official algorithm (its decoder
  stage is what took 129 s with the official code on this machine);
- boxes: the ONNX engine's batched box decoder over the detector's boxes;
- detector: a YOLOv8x-size network (the size of the real ObjectAwareModel.pt) with random
  weights, built from the fixture checkpoint's yaml at scale x, to time it realistically; the
  boxes come from the fixture detector (random weights give arbitrary counts), cut to --boxes.
"""

import argparse
import time

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
from mobilesam_web.modeling.yolo import YOLOv8  # noqa: E402
from mobilesam_web.onnx_predictor import OnnxSamPredictor, load_onnx_engine  # noqa: E402

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
    from mobilesam_web.safe_unpickle import load_ultralytics_checkpoint

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


if __name__ == "__main__":
    main()
