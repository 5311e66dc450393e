"""The batch job (mobilesam_web.batch.job) on Ray Data: image paths -> `map_batches` over an actor
pool (each actor: one `Segmenter`, i.e. one ONNX Runtime engine with `threads` intra-op
threads plus the detector) -> per-image results streamed back to the driver, which writes them
into OUT_DIR (workers need no access to it) and merges them exactly as the local run does.

    from mobilesam_web.batch.job import SegmentJob
    from mobilesam_web.batch.ray_job import run_ray
    run_ray(SegmentJob("photos/", "out/"), address="auto", threads=4)

Workers read the images from their paths: INPUT must be visible to every node under the same
path (a shared disk / NFS mount), as must explicit checkpoint paths (or leave them out and let
each node download the weights from the Hub once).

Sizing: an actor holds the engines (MobileSAM encoder + decoders ~60 MB, the object-aware
detector ~300 MB as float32 for the official YOLOv8x-size checkpoint) plus the working memory of
one image (the detector's activations at imgsz 1024 and box decoding in chunks of 16 boxes,
~40 MB each): about 2-3 GB at peak, hence the default reservation of 3000 MB per actor.
"""

import json
import os
import pickle
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import ray  # noqa: F401  (ImportError here is how the CLI knows Ray is missing)
import ray.data  # noqa: F401

from .job import ImageItem, JobError, SegmentJob, build_items
from .run import run_job
from .segmenter import Segmenter

DEFAULT_THREADS = 2
DEFAULT_ACTOR_MEMORY_MB = 3000
PACKAGE_DIR = Path(__file__).resolve().parent


class SegmentActor:
    """One engine per actor, built once; each call segments a batch of images (of one, by default)."""

    def __init__(self, job: Dict[str, Any]) -> None:
        self.segmenter = Segmenter(SegmentJob(**job))

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        idx, results, files = [], [], []
        for i in range(len(batch["index"])):
            item = ImageItem(
                int(batch["index"][i]), str(batch["path"][i]), str(batch["file_name"][i]), json.loads(batch["boxes"][i])
            )
            result, payload = self.segmenter.process(item)
            idx.append(item.index)
            results.append(json.dumps(result))
            files.append(pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))
        return {
            "index": np.array(idx, dtype=np.int64),
            "result": np.array(results, dtype=object),
            "files": np.array(files, dtype=object),
        }


# ray.init options that only a new instance takes (joining a running cluster refuses them)
NEW_INSTANCE_ONLY = ("include_dashboard", "object_store_memory", "num_cpus", "num_gpus", "resources", "_memory")


def log_ray(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def init_ray(address: Optional[str] = None, **init_kwargs) -> bool:
    """Connect to ADDRESS (a running cluster), or start a local Ray instance. Returns True when
    this call started / connected Ray (and the caller should shut it down)."""
    if ray.is_initialized():
        return False
    if address:
        # ship this package's code so every worker runs the driver's version (its dependencies
        # -- onnxruntime, torch, ... -- must be installed on every node)
        init_kwargs.setdefault("runtime_env", {"py_modules": [str(PACKAGE_DIR)]})
        ray.init(address=address, **init_kwargs)
    else:
        path = os.pathsep.join(p for p in (str(PACKAGE_DIR.parent), os.environ.get("PYTHONPATH")) if p)
        init_kwargs.setdefault("runtime_env", {"env_vars": {"PYTHONPATH": path}})
        own = {"include_dashboard": False, "object_store_memory": 512 << 20}  # only for an instance of our own
        try:
            ray.init(**{**own, **init_kwargs})
        except ValueError as exc:
            # `ray start` (or $RAY_ADDRESS) already runs a cluster here: Ray joins it, and refuses
            # the options of a new instance. Join it as it is, and say so.
            if "existing cluster" not in str(exc):
                raise
            ray.init(**{k: v for k, v in init_kwargs.items() if k not in NEW_INSTANCE_ONLY})
            log_ray(
                f"Ray: joined the cluster already running on this machine ({ray.get_runtime_context().gcs_address})"
            )
    return True


def fit_actors(nodes: List[Dict[str, Any]], threads: int, memory: int, actors: Optional[int] = None) -> int:
    """How many engine actors (each `threads` CPUs and `memory` bytes, on one node) the alive
    `nodes` (as `ray.nodes()` lists them) hold; `actors` given: that many. Refused at once (a
    JobError saying what to change) when no node can hold even one: Ray would wait forever."""
    resources = [n.get("Resources") or {} for n in nodes if n.get("Alive", True)]
    fits = [min(int(r.get("CPU", 0)) // threads, int(r.get("memory", 0)) // max(memory, 1)) for r in resources]
    if not fits or max(fits) == 0:
        cpus = max((int(r.get("CPU", 0)) for r in resources), default=0)
        mb = max((int(r.get("memory", 0)) >> 20 for r in resources), default=0)
        raise JobError(
            f"no node of the Ray cluster can hold one actor of {threads} CPUs (--threads) and {memory >> 20} MB "
            f"(--actor-memory-mb): its largest node has {cpus} CPUs and {mb} MB for tasks. Use --threads "
            f"{max(cpus, 1)} or less and --actor-memory-mb {mb} or less, or add a larger node"
        )
    return actors or sum(fits)


def run_ray(
    job: SegmentJob,
    address: Optional[str] = None,
    actors: Optional[int] = None,
    threads: Optional[int] = None,
    actor_memory_mb: Optional[int] = None,
    log: Callable[[str], None] = print,
    ray_init: Optional[Dict[str, Any]] = None,
) -> int:
    """Run `job` on Ray Data. address None: a local Ray instance (started and stopped here);
    otherwise an existing cluster ('auto', 'ray://head:10001', ...). actors: engine actors
    (default: the cluster's CPUs // threads); threads: intra-op threads per actor (default
    job.threads or 2); actor_memory_mb: memory reserved per actor (default 3000).
    Same outputs and exit codes as `batch.run_local`."""
    job.threads = threads or job.threads or DEFAULT_THREADS
    items, _ = build_items(job)  # fail fast, before starting Ray
    if not items:
        raise JobError(f"no images found in {job.input}")
    started = init_ray(address, **(ray_init or {}))
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # our own progress line says it
        cpus = int(ray.cluster_resources().get("CPU", 1))
        memory = int((actor_memory_mb or DEFAULT_ACTOR_MEMORY_MB) * 2**20)
        capacity = fit_actors(ray.nodes(), job.threads, memory)  # refuses before anything is submitted
        n_actors = actors or capacity
        log(
            f"Ray: {n_actors} actors x {job.threads} threads ({cpus} CPUs in the cluster), "
            f"{memory >> 20} MB reserved per actor"
        )
        if n_actors > capacity:
            log(f"Ray: the nodes hold {capacity} such actors now; the others start when room appears")
        job_dict = job.to_dict()

        def process_all(todo: List[ImageItem]):
            if not todo:
                return
            by_index = {it.index: it for it in todo}
            rows = [
                {
                    "index": it.index,
                    "path": str(Path(it.path).resolve()),
                    "file_name": it.file_name,
                    "boxes": json.dumps(it.boxes),
                }
                for it in todo
            ]
            ds = ray.data.from_items(rows, override_num_blocks=len(rows))
            ds = ds.map_batches(
                SegmentActor,
                fn_constructor_kwargs={"job": job_dict},
                batch_size=1,
                # a fixed pool of what the nodes hold now, growing to n_actors when room appears
                # (Ray 2.60 deprecates `concurrency=` for this)
                compute=ray.data.ActorPoolStrategy(min_size=min(n_actors, capacity), max_size=n_actors),
                num_cpus=job.threads,
                memory=memory,
            )
            for row in ds.iter_rows():
                it = by_index[int(row["index"])]
                yield it, (json.loads(row["result"]), pickle.loads(row["files"]))

        return run_job(job, process_all, log=log)
    finally:
        if started:
            ray.shutdown()
