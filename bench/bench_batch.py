"""Batch segmentation throughput: `mobilesam-web segment` locally vs on a local Ray instance.

    python bench/bench_batch.py [--images 20] [--imgsz 640] [--max-det 32] [--skip-ray]

~20 images (copies, flips, crops of the two fixture images) in a temp folder, everything mode
with the fixture weights (random weights: timings do not depend on weight values; the fixture
detector is a small YOLOv8 and --max-det caps the boxes decoded per image). Each configuration runs
as its own `python -m mobilesam_web segment` process on a fresh OUT_DIR:
  local      1 process, 2 threads
  ray 2x1    Ray local, 2 actors x 1 thread
  ray 1x2    Ray local, 1 actor x 2 threads
Reported: wall time (with start-up), steady-state images/minute (between the first and the last
finished image), peak RSS per worker (from results/*.json: each result records its worker's pid
and peak RSS), and whether annotations.json equals the local run's.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from common import FIXTURES, ROOT

SAM = FIXTURES / "mobilesam_parity"
DET = FIXTURES / "objectaware_parity"


def make_images(folder: Path, n: int) -> None:
    sources = [Image.open(DET / "image.png").convert("RGB"), Image.open(SAM / "image.png").convert("RGB")]
    ops = [
        lambda im: im,
        lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        lambda im: im.transpose(Image.Transpose.FLIP_TOP_BOTTOM),
        lambda im: im.crop((40, 30, im.width - 60, im.height - 20)),
    ]
    for i in range(n):
        sub = folder / f"part{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        ops[(i // 2) % len(ops)](sources[i % 2]).save(sub / f"img{i:03d}.png")


def run(name: str, folder: Path, out: Path, common: list, extra: list) -> dict:
    cmd = [sys.executable, "-m", "mobilesam_web", "segment", str(folder), "--out", str(out), *common, *extra]
    t0 = time.time()
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.time() - t0
    if p.returncode != 0:
        raise SystemExit(f"{name} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    results = [json.loads(f.read_text()) for f in (out / "results").rglob("*.json")]
    stamps = sorted(f.stat().st_mtime for f in (out / "results").rglob("*.json"))
    steady = (len(stamps) - 1) / (stamps[-1] - stamps[0]) * 60 if len(stamps) > 1 and stamps[-1] > stamps[0] else 0
    workers = {}
    for r in results:
        w = r["worker"]
        k = (w["host"], w["pid"])
        workers[k] = max(workers.get(k, 0.0), w["peak_rss_mb"])
    per_image = sorted(r["seconds"] for r in results)
    return {
        "name": name,
        "images": len(results),
        "wall": wall,
        "per_min": len(results) / wall * 60,
        "steady_per_min": steady,
        "first_result_s": stamps[0] - t0,
        "workers": workers,
        "median_image_s": per_image[len(per_image) // 2],
        "annotations": (out / "annotations.json").read_bytes(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--max-det", type=int, default=32)
    ap.add_argument("--skip-ray", action="store_true")
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench_batch_") as tmp:
        tmp = Path(tmp)
        make_images(tmp / "in", args.images)
        common = [
            "--checkpoint",
            str(SAM / "weights_fp16.pt"),
            "--detector-checkpoint",
            str(DET / "objectaware_random.pt"),
            "--imgsz",
            str(args.imgsz),
            "--conf",
            "0.25",
            "--max-det",
            str(args.max_det),
            "--onnx-cache",
            str(tmp / "onnx"),
            "--no-progress",
        ]
        # export the ONNX graphs once, outside the timings
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from mobilesam_web import load_predictor; "
                f"load_predictor({str(SAM / 'weights_fp16.pt')!r}, cache_dir={str(tmp / 'onnx')!r})",
            ],
            cwd=ROOT,
            check=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
        )
        configs = [("local 1 proc x 2 threads", ["--threads", "2"])]
        if not args.skip_ray:
            configs += [
                ("ray 2 actors x 1 thread", ["--ray", "--actors", "2", "--threads", "1", "--actor-memory-mb", "1500"]),
                ("ray 1 actor x 2 threads", ["--ray", "--actors", "1", "--threads", "2", "--actor-memory-mb", "1500"]),
            ]
        rows = [run(name, tmp / "in", tmp / f"out{i}", common, extra) for i, (name, extra) in enumerate(configs)]
    print(
        f"{args.images} images (fixture copies/flips/crops, 600-900 px), everything mode, detector imgsz "
        f"{args.imgsz}, <= {args.max_det} boxes/image, {os.cpu_count()} CPU cores; load average "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after (other work on the machine skews timings)"
    )
    print(
        f"{'config':26s} {'wall s':>7s} {'img/min':>8s} {'steady img/min':>15s} {'1st result s':>13s} "
        f"{'median s/img':>13s}  peak RSS per worker (MB)   same annotations.json"
    )
    for r in rows:
        rss = ", ".join(f"{v:.0f}" for v in r["workers"].values())
        same = "reference" if r is rows[0] else ("yes" if r["annotations"] == rows[0]["annotations"] else "NO")
        print(
            f"{r['name']:26s} {r['wall']:7.1f} {r['per_min']:8.1f} {r['steady_per_min']:15.1f} "
            f"{r['first_result_s']:13.1f} {r['median_image_s']:13.2f}  {rss:25s} {same}"
        )
    print("""
Scaling note: the work per image (decode, encoder ~1 s, detector, box decoding ~ boxes x 10-40 ms,
mask post-processing, RLE) is independent across images, so steady-state throughput grows about
linearly with the cores given to actors (nodes x actors per node x threads per actor) as long as
INPUT is read from a disk that keeps up. What does not shrink with nodes: the per-actor start-up
(load + first ONNX session creation: a few seconds here, ~10-20 s and a one-off ONNX export per
node with the real 140 MB detector) and Ray's own start-up on the driver, which only amortise over
many images. On one machine Ray adds its own start-up (~8 s here) and a process per actor; in steady
state several 1-2 thread actors use the cores better than one many-thread engine (ONNX Runtime and
torch scale sub-linearly with threads within one image), at the cost of one engine's memory per
actor; prefer fewer, wider actors when memory is short (large images, many boxes).""")


if __name__ == "__main__":
    main()
