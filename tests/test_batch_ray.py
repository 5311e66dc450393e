"""The batch job on Ray Data (a local Ray instance) gives the same output folder as the local run.

Ray is a test requirement (scripts/test.sh installs requirements-ray.txt): missing, this fails."""

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray  # noqa: F401  (must be installed: a missing Ray is a failure, not a skip)
from pycocotools.coco import COCO

from conftest import OBJECTAWARE_FIXTURE, require
from test_batch import DET_CKPT, FAST, SAM_CKPT, make_folder


def tree(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


RAY_INIT = {"num_cpus": 2, "object_store_memory": 200 << 20, "include_dashboard": False}


def ray_run(folder, dist, opts) -> int:
    """One actor with the local run's 2 threads, on a small local Ray instance (the caller's, if
    it started one)."""
    from mobilesam_web.batch.job import SegmentJob
    from mobilesam_web.batch.ray_job import run_ray

    return run_ray(
        SegmentJob(str(folder), str(dist), **opts), actors=1, threads=2, actor_memory_mb=1000, ray_init=RAY_INIT
    )


def test_ray_run_equals_local_run(tmp_path, shared_onnx_cache):
    from mobilesam_web.batch.job import SegmentJob
    from mobilesam_web.batch.run import run_local

    folder = make_folder(tmp_path / "in", n_extra=1)
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
        onnx_cache=shared_onnx_cache,
        progress=False,
    )
    local, dist = tmp_path / "local", tmp_path / "ray"
    assert run_local(SegmentJob(str(folder), str(local), **opts)) == 1  # bad.jpg
    # A library user's own Ray instance: both runs below use it and leave it running (one start
    # of Ray fewer; the next test checks that a run shuts down the instance it started itself).
    ray.init(**RAY_INIT)
    try:
        # one actor with the local run's 2 threads: bit-identical engines, so bit-identical masks
        rc = ray_run(folder, dist, opts)
        assert rc == 1
        assert ray.is_initialized()
        # resumable on Ray too: a rerun finds everything done and rewrites the same annotations.json
        before = (dist / "annotations.json").read_bytes()
        assert ray_run(folder, dist, opts) == 1 and (dist / "annotations.json").read_bytes() == before
    finally:
        ray.shutdown()
    a, b = tree(local), tree(dist)
    assert sorted(a) == sorted(b)
    for name in a:  # results/*.json record seconds per image; everything else byte for byte
        if not name.startswith("results/"):
            assert a[name] == b[name], name
    coco = COCO(str(dist / "annotations.json"))
    assert len(coco.imgs) == 5 and len(coco.anns) > 0
    errors = json.loads((dist / "errors.json").read_text())
    assert [e["file_name"] for e in errors] == ["bad.jpg"]


def test_ray_runs_mobilesamv2_with_another_encoder(tmp_path, shared_onnx_cache):
    """MobileSAMv2's EfficientViT-L2 encoder-only l2.pt + prompt-guided decoder: Ray = local."""
    from mobilesam_web.batch.job import SegmentJob
    from mobilesam_web.batch.run import run_local

    from parity_checks import efficientvit_seed, write_efficientvit_files

    weights = write_efficientvit_files(tmp_path, efficientvit_seed())
    folder = tmp_path / "in"  # one image: the encoder is what differs from the test above
    folder.mkdir()
    shutil.copy(require(OBJECTAWARE_FIXTURE / "image.png"), folder / "a.png")
    opts = dict(
        mode="everything",
        checkpoint=str(weights / "l2.pt"),
        decoder_checkpoint=str(weights / "Prompt_guided_Mask_Decoder.pt"),
        detector_checkpoint=str(DET_CKPT),
        imgsz=320,
        conf=0.25,
        max_det=8,
        threads=2,
        onnx_cache=shared_onnx_cache,
        progress=False,
    )
    local, dist = tmp_path / "local", tmp_path / "ray"
    rc_local = run_local(SegmentJob(str(folder), str(local), **opts))
    assert ray_run(folder, dist, opts) == rc_local
    assert not ray.is_initialized()  # the instance the run started itself was shut down
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


def test_memory_note_names_the_option():
    from mobilesam_web.batch.ray_job import memory_note, peak_rss_mb

    assert memory_note(900, 3000).endswith("peaked at 900 MB of the 3000 MB reserved (--actor-memory-mb)")
    assert memory_note(1038, 700).endswith("use --actor-memory-mb 1300 for this data")
    assert 10 < peak_rss_mb() < 64_000  # this process's VmHWM


def test_ray_argument_forms(tmp_path, capsys):
    """#22 item 4: `--ray FOLDER --out X` keeps FOLDER as the input; what is neither an address nor
    a path is refused with the forms Ray takes."""
    from mobilesam_web.batch.ray_connect import give_back_input, is_ray_address
    from mobilesam_web.cli import segment

    folder = tmp_path / "photos"
    folder.mkdir()
    assert give_back_input(["--ray", str(folder), "--out", "x"]) == ["--ray=local", str(folder), "--out", "x"]
    assert give_back_input([str(folder), "--ray", "auto", "--out", "x"])[2] == "auto"
    for address in ("auto", "10.0.0.5:6379", "head-1.example:6379", "[::1]:6379", "ray://head:10001", "ray://head"):
        assert is_ray_address(address), address
    for word in ("head", "photos/", "head:", "ray:/head:1", "http://head:8265"):
        assert not is_ray_address(word), word
    with pytest.raises(SystemExit) as exit_:
        segment([str(folder), "--out", str(tmp_path / "out"), "--ray", "head"])
    assert exit_.value.code == 2 and "not a Ray address" in capsys.readouterr().err
    # the swallowed folder: the run gets as far as finding no images in it
    assert segment(["--ray", str(folder), "--out", str(tmp_path / "out")]) == 2
    assert f"no images found in {folder}" in capsys.readouterr().err


def test_token_authenticated_cluster_by_every_address(tmp_path, shared_onnx_cache, monkeypatch, capsys):
    """#22 items 2 and 4: a `ray start` cluster with token authentication, reached as HOST:PORT,
    ray://HOST:PORT (Ray Client: Ray Data's driver then runs in the cluster), `auto` and no
    address (which joins the cluster running on this machine, and says so, instead of failing on
    a new instance's options), with the same results; refused within seconds, saying what to
    set, when the token is missing or wrong, and when nothing answers; no MapWorker outlives a run.
    One image on a cluster that holds two actors: one actor per run (each loads the engines)."""
    from mobilesam_web.cli import segment as segment_command

    from server_utils import free_port

    token = secrets.token_hex(32)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    base.update(HOME=str(tmp_path / "home"), RAY_USAGE_STATS_ENABLED="0")
    gcs, client = free_port(), free_port()
    start = ["ray", "start", "--head", "--port", str(gcs), "--ray-client-server-port", str(client)]
    start += ["--num-cpus", "2", "--include-dashboard=false", "--disable-usage-stats"]
    env = {**base, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    subprocess.run(start, check=True, env=env, capture_output=True, timeout=120)
    wait_for_port(client)  # `ray start` returns before its Ray Client server listens (seen on a busy machine)
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(require(OBJECTAWARE_FIXTURE / "image.png"), folder / "a.png")

    def args(address, out):
        cmd = [str(folder), "--out", str(tmp_path / out), "--ray", *([address] if address else [])]
        cmd += ["--checkpoint", str(SAM_CKPT), "--detector-checkpoint", str(DET_CKPT), *FAST]
        return cmd + ["--actor-memory-mb", "1000", "--onnx-cache", shared_onnx_cache, "--no-progress"]

    try:
        # refused before Ray is asked to connect: in this process (what the command runs), quicker
        refusals = [
            (f"127.0.0.1:{gcs}", {}, "this command sent none"),
            (f"ray://127.0.0.1:{client}", {}, "this command sent none"),
            (f"127.0.0.1:{gcs}", {"RAY_AUTH_MODE": "token"}, "no token was found"),
            (f"127.0.0.1:{gcs}", {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64}, "refused the token"),
            (f"127.0.0.1:{free_port()}", {}, "nothing answers at"),
        ]
        for address, extra, why in refusals:
            with monkeypatch.context() as m:
                for name in [k for k in os.environ if k.startswith(("RAY_AUTH", "RAY_ADDRESS"))]:
                    m.delenv(name)
                m.setenv("HOME", base["HOME"])
                for name, value in extra.items():
                    m.setenv(name, value)
                t0 = time.monotonic()
                rc = segment_command(args(address, "refused"))
                err = capsys.readouterr().err
            assert rc == 2 and why in err, (address, extra, err[-2000:])
            assert "RAY_AUTH_MODE=token" in err or "nothing answers" in err
            assert time.monotonic() - t0 < 20, "Ray's own retries (20-30 s) were not cut short"
            assert not ray.is_initialized() and not (tmp_path / "refused" / "annotations.json").exists()
        (tmp_path / "home" / ".ray").mkdir(parents=True)
        (tmp_path / "home" / ".ray" / "auth_token").write_text(token)  # where `auto` finds it
        runs = {
            "gcs": (f"127.0.0.1:{gcs}", {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}),
            "client": (f"ray://127.0.0.1:{client}", {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}),
            "auto": ("auto", {}),
            "none": (None, {}),
        }
        for out, (address, extra) in runs.items():
            cmd = [sys.executable, "-m", "mobilesam_web", "segment", *args(address, out)]
            run = subprocess.run(cmd, env={**base, **extra}, capture_output=True, text=True, timeout=600)
            assert run.returncode == 0, (address, run.stderr[-3000:])
            assert not map_workers(), f"a MapWorker outlived the run on {address}"
            assert "Ray: 1 image(s) left to do, so 1 actor(s), not 2" in run.stdout + run.stderr, address
        assert "joined the cluster already running on this machine" in run.stderr, run.stderr[-3000:]
        assert "object_store_memory" not in run.stderr
        # Ray Data's own lines stay in its log; our line on the actors' memory names our option
        said = run.stdout + run.stderr
        assert not any(noise in said for noise in ("Execution plan", "Progress bars disabled", "memory=")), said
        assert "an actor's memory peaked at" in said and "MB reserved (--actor-memory-mb)" in said
        first = (tmp_path / "gcs" / "annotations.json").read_bytes()
        assert len(json.loads(first)["annotations"]) > 0
        assert all((tmp_path / out / "annotations.json").read_bytes() == first for out in runs)
        # the cluster's actor table (dead actors included): one MapWorker per run, no more
        count = (
            f"import ray; from ray._private import state; ray.init(address='127.0.0.1:{gcs}', logging_level='ERROR'); "
            "print(sum(a['ActorClassName'].startswith('MapWorker') for a in state.actors().values()))"
        )
        made = subprocess.run([sys.executable, "-c", count], env=env, capture_output=True, text=True, timeout=120)
        assert made.stdout.split()[-1:] == [str(len(runs))], made.stdout + made.stderr[-2000:]
    finally:
        subprocess.run(["ray", "stop", "--force"], env=base, capture_output=True, timeout=120)


def wait_for_port(port: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on port {port} after {timeout} s"
            time.sleep(0.2)


def map_workers() -> list:
    """The command lines of Ray Data actor processes running on this machine."""
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    return [line for line in ps.splitlines() if line.startswith("ray::MapWorker")]
