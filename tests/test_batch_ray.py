"""The batch job on Ray Data (a local Ray instance) gives the same output folder as the local run.

Ray is a test requirement (scripts/test.sh installs requirements-ray.txt): missing, this fails."""

import json
from pathlib import Path

import ray  # noqa: F401  (must be installed: a missing Ray is a failure, not a skip)
from pycocotools.coco import COCO

from test_batch import DET_CKPT, SAM_CKPT, make_folder


def tree(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def ray_run(folder, dist, opts) -> int:
    """One actor with the local run's 2 threads, on a small local Ray instance."""
    from mobilesam_web.batch.job import SegmentJob
    from mobilesam_web.batch.ray_job import run_ray

    return run_ray(
        SegmentJob(str(folder), str(dist), **opts),
        actors=1,
        threads=2,
        actor_memory_mb=1000,
        ray_init={"num_cpus": 2, "object_store_memory": 200 << 20, "include_dashboard": False},
    )


def test_ray_run_equals_local_run(tmp_path):
    from mobilesam_web.batch.job import SegmentJob
    from mobilesam_web.batch.run import run_local

    folder = make_folder(tmp_path / "in", n_extra=1)
    cache = tmp_path / "onnx"
    opts = dict(
        mode="everything",
        checkpoint=str(SAM_CKPT),
        detector_checkpoint=str(DET_CKPT),
        imgsz=320,
        conf=0.25,
        max_det=8,
        png=True,
        embeddings=True,
        threads=2,
        onnx_cache=str(cache),
        progress=False,
    )
    local, dist = tmp_path / "local", tmp_path / "ray"
    assert run_local(SegmentJob(str(folder), str(local), **opts)) == 1  # bad.jpg
    # one actor with the local run's 2 threads: bit-identical engines, so bit-identical masks
    rc = ray_run(folder, dist, opts)
    assert rc == 1
    assert not ray.is_initialized()  # the local instance was shut down
    a, b = tree(local), tree(dist)
    assert sorted(a) == sorted(b)
    for name in a:  # results/*.json record seconds per image; everything else byte for byte
        if not name.startswith("results/"):
            assert a[name] == b[name], name
    coco = COCO(str(dist / "annotations.json"))
    assert len(coco.imgs) == 5 and len(coco.anns) > 0
    errors = json.loads((dist / "errors.json").read_text())
    assert [e["file_name"] for e in errors] == ["bad.jpg"]

    # resumable on Ray too: a rerun finds everything done and rewrites the same annotations.json
    before = (dist / "annotations.json").read_bytes()
    rc = ray_run(folder, dist, opts)
    assert rc == 1 and (dist / "annotations.json").read_bytes() == before


def test_ray_runs_mobilesamv2_with_another_encoder(tmp_path):
    """MobileSAMv2's EfficientViT-L2 encoder-only l2.pt + prompt-guided decoder: Ray = local."""
    from mobilesam_web.batch.job import SegmentJob
    from mobilesam_web.batch.run import run_local

    from parity_checks import efficientvit_seed, write_efficientvit_files

    weights = write_efficientvit_files(tmp_path, efficientvit_seed())
    folder = make_folder(tmp_path / "in", n_extra=0)
    opts = dict(
        mode="everything",
        checkpoint=str(weights / "l2.pt"),
        decoder_checkpoint=str(weights / "Prompt_guided_Mask_Decoder.pt"),
        detector_checkpoint=str(DET_CKPT),
        imgsz=320,
        conf=0.25,
        max_det=8,
        threads=2,
        onnx_cache=str(tmp_path / "onnx"),
        progress=False,
    )
    local, dist = tmp_path / "local", tmp_path / "ray"
    rc_local = run_local(SegmentJob(str(folder), str(local), **opts))
    assert ray_run(folder, dist, opts) == rc_local
    a, b = tree(local), tree(dist)
    assert sorted(a) == sorted(b) and (dist / "annotations.json").read_bytes() == a["annotations.json"]
    assert len(json.loads(a["annotations.json"])["annotations"]) > 0


def test_actors_are_fitted_to_the_nodes_or_refused_at_once():
    """#22 item 3: actors of --threads CPUs and --actor-memory-mb on nodes of fewer CPUs would
    wait forever in Ray: refused before anything is submitted, saying what to change; by default
    as many actors as the nodes hold, node by node."""
    import pytest

    from mobilesam_web.batch.job import JobError
    from mobilesam_web.batch.ray_job import fit_actors

    gb = 2**30

    def node(cpus, mem_gb, alive=True):
        return {"Alive": alive, "Resources": {"CPU": float(cpus), "memory": float(mem_gb * gb)}}

    two_small = [node(2, 8), node(2, 8)]
    with pytest.raises(JobError, match=r"one actor of 4 CPUs.*largest node has 2 CPUs.*--threads 2 or less"):
        fit_actors(two_small, threads=4, memory=3 * gb)  # the README's cluster example on 2-CPU nodes
    with pytest.raises(JobError, match="--actor-memory-mb 8192 or less"):
        fit_actors(two_small, threads=2, memory=9 * gb)
    assert fit_actors(two_small, threads=2, memory=3 * gb) == 2  # one per node, not 4 // 2 cluster-wide
    assert fit_actors([node(8, 8), node(3, 64), node(16, 64, alive=False)], threads=2, memory=3 * gb) == 2 + 1
    assert fit_actors(two_small, threads=1, memory=3 * gb, actors=5) == 5  # asked: more wait for room


def test_joins_a_cluster_already_running_on_this_machine(tmp_path):
    """#22 item 2: `--ray` without an address where `ray start` already runs a cluster joins it
    (and says so) instead of failing on a new instance's options; `ray stop` is the user's."""
    import os
    import subprocess
    import sys

    from test_batch import FAST

    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    start = ["ray", "start", "--head", "--num-cpus", "2", "--include-dashboard=false", "--disable-usage-stats"]
    subprocess.run(start, check=True, env=env, capture_output=True, timeout=120)
    try:
        folder = make_folder(tmp_path / "in")
        cmd = [sys.executable, "-m", "mobilesam_web", "segment", str(folder), "--out", str(tmp_path / "out"), "--ray"]
        cmd += ["--checkpoint", str(SAM_CKPT), "--detector-checkpoint", str(DET_CKPT), *FAST]
        cmd += ["--actor-memory-mb", "1000", "--onnx-cache", str(tmp_path / "onnx")]
        run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert run.returncode == 1, run.stderr[-3000:]  # bad.jpg
        assert "joined the cluster already running on this machine" in run.stderr, run.stderr[-3000:]
        assert "object_store_memory" not in run.stderr
        assert len(COCO(str(tmp_path / "out" / "annotations.json")).imgs) == 4
    finally:
        subprocess.run(["ray", "stop", "--force"], env=env, capture_output=True, timeout=120)
