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
import logging
import os
import pickle
import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import ray  # noqa: F401  (ImportError here is how the CLI knows Ray is missing)
import ray.data  # noqa: F401

from .job import ImageItem, JobError, SegmentJob, build_items
from .ray_connect import init_ray
from .run import run_job
from .segmenter import Segmenter

DEFAULT_THREADS = 2
DEFAULT_ACTOR_MEMORY_MB = 3000


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
            "peak_mb": np.full(len(idx), peak_rss_mb(), dtype=np.int64),
        }


def peak_rss_mb() -> int:
    """This process's peak resident memory (VmHWM) in MB; 0 where /proc is not there."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) >> 10 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError):
        return 0


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


def memory_note(peak_mb: int, reserved_mb: int) -> str:
    """What the actors' memory peaked at, against what --actor-memory-mb reserved for each."""
    note = f"Ray: an actor's memory peaked at {peak_mb} MB of the {reserved_mb} MB reserved (--actor-memory-mb)"
    if peak_mb <= reserved_mb:
        return note
    advice = -(-peak_mb * 5 // 4 // 100) * 100  # a quarter more, rounded up to 100 MB
    return (
        f"{note}: more than reserved, so Ray may place more actors on a node than its memory holds; "
        f"use --actor-memory-mb {advice} for this data"
    )


def segment_rows(rows: List[Dict[str, Any]], job: Dict[str, Any], pool: Tuple[int, int], threads: int, memory: int):
    """The Ray Data pipeline: rows (index, path, file_name, boxes) -> (index, result JSON, pickled
    files) per image, as they finish. pool: the actor pool's (min, max) size."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # our own progress line says it
    # Ray Data's own lines (its plan, "progress bars disabled", memory advice naming its `memory=`
    # argument) go to its log file only; run_ray says what the actors' memory peaked at
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    ds = ray.data.from_items(rows, override_num_blocks=len(rows))
    ds = ds.map_batches(
        SegmentActor,
        fn_constructor_kwargs={"job": job},
        batch_size=1,
        # a fixed pool of what the nodes hold now, growing to the max when room appears
        # (Ray 2.60 deprecates `concurrency=` for this)
        compute=ray.data.ActorPoolStrategy(min_size=pool[0], max_size=pool[1]),
        num_cpus=threads,
        memory=memory,
    )
    for row in ds.iter_rows():
        yield int(row["index"]), row["result"], row["files"], int(row["peak_mb"])
    wait_for_workers()


def wait_for_workers(timeout: float = 30.0) -> None:
    """Ray Data stops its actor pool asynchronously after the last image: wait (bounded) until
    this job's MapWorker actors are dead and, on this node, their processes gone, so that none
    outlives the command holding an engine (~1 GB) for another half minute."""
    try:
        from ray._private import state  # the GCS actor table (the public state API needs the dashboard)

        context = ray.get_runtime_context()
        job, here = ray.JobID.from_hex(context.get_job_id()), context.get_node_id()
    except Exception:  # noqa: BLE001  (another Ray version: only the wait is lost)
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = [a for a in state.actors(job_id=job).values() if a["ActorClassName"].startswith("MapWorker")]
        if all(a["State"] == "DEAD" and not (a["Address"]["NodeID"] == here and running(a["Pid"])) for a in workers):
            return
        time.sleep(0.2)


def running(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's
        return True
    return True


class ClusterDriver:
    """Ray Data's executor must run inside the cluster, which a Ray Client (ray://) process is
    not: this actor, started on the cluster, runs `segment_rows` in a thread and hands the images
    finished so far to the client whenever it asks (so results still stream into OUT_DIR)."""

    def __init__(self, *args) -> None:
        self.done: queue.Queue = queue.Queue()
        threading.Thread(target=self._run, args=args, daemon=True).start()

    def _run(self, *args) -> None:
        try:
            for out in segment_rows(*args):
                self.done.put(out)
            self.done.put(None)  # the end
        except BaseException as exc:  # noqa: BLE001  (handed to the client, which raises it)
            self.done.put(exc)

    def take(self, wait: float = 10.0) -> list:
        """What finished since the last call (waiting up to `wait` s for something)."""
        try:
            out = [self.done.get(timeout=wait)]
        except queue.Empty:
            return []
        while not self.done.empty():
            out.append(self.done.get_nowait())
        return out


def stream_results(address: Optional[str], *args):
    """`segment_rows(*args)` here, or through a ClusterDriver when connected with Ray Client."""
    if not (address or "").startswith("ray://"):
        yield from segment_rows(*args)
        return
    driver = ray.remote(num_cpus=0)(ClusterDriver).remote(*args)
    try:
        while True:
            for out in ray.get(driver.take.remote()):
                if out is None:
                    return
                if isinstance(out, BaseException):
                    raise out
                yield out
    finally:
        ray.kill(driver)


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
        peak = [0]

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
            # an actor loads the engines (seconds of CPU, ~1 GB) before its first image: never
            # more of them than there are images left to do
            most = min(n_actors, len(todo))
            if most < n_actors:
                log(f"Ray: {len(todo)} image(s) left to do, so {most} actor(s), not {n_actors}")
            pool = (min(most, capacity), most)
            for index, result, files, peak_mb in stream_results(address, rows, job_dict, pool, job.threads, memory):
                peak[0] = max(peak[0], peak_mb)
                yield by_index[index], (json.loads(result), pickle.loads(files))

        rc = run_job(job, process_all, log=log)
        if peak[0]:
            log(memory_note(peak[0], memory >> 20))
        return rc
    finally:
        if started:
            ray.shutdown()
