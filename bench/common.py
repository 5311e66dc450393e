"""Helpers shared by the benchmarks."""

import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT.parent / "shared" / "fixtures"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def median_time(fn, n: int, warmup: int = 1) -> float:
    """Median wall time of `fn()` over n runs after `warmup` runs (seconds)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def engine_arguments(description: str):
    """The options every engine benchmark takes: weights, image, threads, repetitions.
    Defaults: the random-weight parity fixture (timings do not depend on weight values)."""
    import argparse

    fixture = FIXTURES / "mobilesam_parity"
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--checkpoint", default=str(fixture / "weights_fp16.pt"))
    ap.add_argument("--image", default=str(fixture / "image.png"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", type=int, default=5, help="timed repetitions (median reported)")
    return ap


def load_rgb(path) -> np.ndarray:
    from PIL import Image

    return np.array(Image.open(path).convert("RGB"))
