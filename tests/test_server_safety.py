"""What keeps a public server sound besides its routes: the ONNX cache's integrity, bounded
session memory, Gradio's upload rule in every start mode, and bounded image decoding."""

import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import MOBILESAM_FIXTURE, REPO_ROOT
from hostile_client import RawGradio, file_data
from server_utils import running_app

GRAPHS = ("decoder_lowres", "decoder_boxes")


@pytest.fixture(scope="module")
def cache_template(tmp_path_factory, sam_weights_path):
    """One export of two small graphs, copied for each test (export is the slow part)."""
    from mobilesam_web.engine.onnx.cache import cached_exports

    root = tmp_path_factory.mktemp("onnx-template")
    cached_exports(sam_weights_path, root, GRAPHS)
    return root


@pytest.fixture
def cache(cache_template, tmp_path):
    root = tmp_path / "onnx"
    shutil.copytree(cache_template, root)
    return root


def _lookup(sam_weights_path, root, graphs=GRAPHS):
    from mobilesam_web.engine.onnx import cache as onnx_cache
    from mobilesam_web.engine.onnx import export as export_mod

    lines = []
    calls = []
    real = export_mod.export_all

    def counting(*args, **kwargs):
        calls.append(list(args[2] if len(args) > 2 else kwargs.get("graphs")))
        return real(*args, **kwargs)

    export_mod.export_all = counting
    try:
        paths = onnx_cache.cached_exports(sam_weights_path, root, graphs, log=lines.append)
    finally:
        export_mod.export_all = real
    return paths, calls, lines


def test_manifest_records_each_graphs_sha256(cache, sam_weights_path):
    from mobilesam_web.engine.checkpoints import file_sha256

    paths, calls, _ = _lookup(sam_weights_path, cache)
    assert calls == []  # reused
    manifest = json.loads((paths["decoder_lowres"].parent / "manifest.json").read_text())
    for name in GRAPHS:
        assert manifest["sha256"][name] == file_sha256(paths[name])


def test_same_size_overwrite_is_detected_and_reexported(cache, sam_weights_path):
    paths, _, _ = _lookup(sam_weights_path, cache)
    p = paths["decoder_lowres"]
    size = p.stat().st_size
    with open(p, "r+b") as f:  # 16 KiB of garbage in the weights, size unchanged
        f.seek(size // 2)
        f.write(os.urandom(16384))
    assert p.stat().st_size == size
    paths, calls, lines = _lookup(sam_weights_path, cache)
    assert calls == [["decoder_lowres"]]
    assert any("sha256 does not match" in line for line in lines), lines
    from mobilesam_web.engine.checkpoints import file_sha256

    manifest = json.loads((p.parent / "manifest.json").read_text())
    assert manifest["sha256"]["decoder_lowres"] == file_sha256(p)


def test_partial_reexport_keeps_every_manifest_entry(cache, sam_weights_path):
    paths, _, _ = _lookup(sam_weights_path, cache)
    paths["decoder_boxes"].unlink()
    paths, calls, _ = _lookup(sam_weights_path, cache)
    assert calls == [["decoder_boxes"]]
    manifest = json.loads((paths["decoder_boxes"].parent / "manifest.json").read_text())
    assert set(GRAPHS) <= set(manifest["files"]) and set(GRAPHS) <= set(manifest["sha256"])


def test_stale_temp_folders_removed(cache, sam_weights_path):
    paths, _, _ = _lookup(sam_weights_path, cache)
    folder = paths["decoder_lowres"].parent
    stale = folder / ".export-killed123"
    stale.mkdir()
    (stale / "encoder.onnx").write_bytes(b"x" * 1000)
    _, calls, lines = _lookup(sam_weights_path, cache)
    assert not stale.exists() and calls == []
    assert any("interrupted export" in line for line in lines)


def test_graph_refused_by_onnxruntime_is_reexported(cache, sam_weights_path):
    """A file whose manifest hash matches but that ORT can't load (e.g. written by a broken
    exporter) is discarded and re-exported when the engine loads, instead of a traceback."""
    from mobilesam_web.engine.checkpoints import file_sha256
    from mobilesam_web.engine.onnx import predictor as onnx_predictor

    paths, _, _ = _lookup(sam_weights_path, cache)
    p = paths["decoder_boxes"]
    p.write_bytes(b"\x08\x07 not a model")
    manifest_path = p.parent / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["sha256"]["decoder_boxes"] = file_sha256(p)
    manifest_path.write_text(json.dumps(manifest))
    # the metadata check can't read it either: make that check pass to reach ONNX Runtime
    from mobilesam_web.engine.onnx import cache as onnx_cache

    real_problem = onnx_cache._cache_problem
    onnx_cache._cache_problem = lambda folder, name, m, sha: (
        None
        if name == "decoder_boxes" and p.is_file() and p.stat().st_size < 100
        else real_problem(folder, name, m, sha)
    )
    lines = []
    try:
        onnx_predictor._ENGINES.clear()
        engine = onnx_predictor.load_onnx_engine(sam_weights_path, cache, threads=1, log=lines.append)
    finally:
        onnx_cache._cache_problem = real_problem
        onnx_predictor._ENGINES.clear()
    assert any("ONNX Runtime refused" in line for line in lines), lines
    assert p.stat().st_size > 100_000
    engine.session("decoder_boxes")


def test_idle_sessions_are_forgotten(sam_weights_path, tmp_path):
    import datetime

    from gradio.state_holder import StateHolder

    from mobilesam_web.ui import build_app
    from mobilesam_web.ui.services import AppConfig
    from mobilesam_web.ui.sessions import prune_sessions

    demo = build_app(
        config=AppConfig(
            checkpoint=str(sam_weights_path),
            onnx_cache_dir=str(tmp_path),
            backend="torch",
            session_ttl=60,
            max_sessions=50,
        )
    )
    holder = StateHolder()
    holder.set_blocks(demo)
    assert holder.capacity == 50
    for i in range(30):
        holder[f"s{i}"]
    later = datetime.datetime.now() + datetime.timedelta(seconds=30)
    holder["fresh"]  # used now
    assert prune_sessions(demo, ttl=60, now=later) == 0
    assert prune_sessions(demo, ttl=60, now=later + datetime.timedelta(seconds=40)) == 31
    assert len(holder.session_data) == 0


def _attack(url: str, secret: str) -> dict:
    raw = RawGradio(url)
    return raw.event(raw.fn_index("segment"), [file_data(secret), [[1, 1]], [1], None, False])


MOUNT_SCRIPT = """
import sys, uvicorn, gradio as gr
from fastapi import FastAPI
from mobilesam_web.ui import build_app
from mobilesam_web.ui.services import AppConfig
args = sys.argv[1:]
port = int(args[args.index("--port") + 1])
checkpoint, mode = [a for i, a in enumerate(args) if a != "--port" and (i == 0 or args[i - 1] != "--port")]
demo = build_app(config=AppConfig(checkpoint=checkpoint, backend="torch"))
if mode == "launch":
    demo.launch(server_name="127.0.0.1", server_port=port, show_error=True)  # as app.py --share
else:  # someone else's FastAPI app, mounted the documented way
    app = gr.mount_gradio_app(FastAPI(), demo, path="/")
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
"""


@pytest.mark.parametrize("mode", ["launch", "mounted-by-someone-else"])
def test_upload_rule_holds_in_every_start_mode(mode, sam_weights_path, tmp_path):
    """`python app.py` is covered by test_hostile; here Gradio's own launcher (what --share
    uses) and a plain gr.mount_gradio_app() of build_app() refuse a server path too."""
    script = tmp_path / "serve.py"
    script.write_text(MOUNT_SCRIPT)
    secret = tmp_path / "secret.png"
    Image.new("RGB", (32, 32), (9, 9, 9)).save(secret)
    env = {
        "PYTHONPATH": str(REPO_ROOT),
        "GRADIO_TEMP_DIR": str(tmp_path / "uploads"),
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    with running_app([str(sam_weights_path), mode], env, script=script) as url:
        res = _attack(url, str(secret))
        assert not res["success"] and "not uploaded" in res["error"], res
        assert not list((tmp_path / "uploads").rglob("secret.png"))
        raw = RawGradio(url)
        ok = raw.event(
            raw.fn_index("segment"),
            [raw.uploaded((MOBILESAM_FIXTURE / "image.png").read_bytes()), [[100, 100]], [1], None, False],
            timeout=120,
        )
        assert ok["success"], ok


def test_float_image_with_infinity_keeps_its_range():
    from mobilesam_web.data.image_io import load_image

    arr = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    arr[0, 0], arr[0, 1], arr[0, 2] = np.inf, -np.inf, np.nan
    buf = io.BytesIO()
    Image.fromarray(arr, "F").save(buf, "TIFF")
    out, _ = load_image(buf.getvalue())
    assert out[0, 0, 0] == 255 and out[0, 1, 0] == 0 and out[0, 2, 0] == 0
    assert out[16, 16, 0] == pytest.approx(255 * arr[16, 16], abs=1) and 100 < out.mean() < 160


def test_16bit_100_megapixel_png_decodes_in_bounded_memory(tmp_path):
    """Measured in a fresh process: peak RSS growth while decoding stays under 1 GB, and the
    result is the downscaled image with the original size reported."""
    code = f"""
import resource, struct, zlib, sys
sys.path.insert(0, {str(REPO_ROOT)!r})
def chunk(tag, data):
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
w = h = 10000
row = b"\\x00" + b"\\x12\\x34" * (w // 2) + b"\\xff\\xff" * (w // 2)
z = zlib.compressobj(9)
data = (b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 0, 0, 0, 0))
        + chunk(b"IDAT", b"".join(z.compress(row) for _ in range(h)) + z.flush()) + chunk(b"IEND", b""))
from mobilesam_web.data.image_io import read_image
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = read_image(data)
growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(out.image.shape, out.original_size, growth // 1024, int(out.image[5, 10, 0]), int(out.image[5, -10, 0]))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    parts = res.stdout.split(")")
    assert "(2048, 2048, 3)" in res.stdout and "(10000, 10000)" in res.stdout
    growth_mb, left, right = (int(v) for v in parts[-1].split())
    assert growth_mb < 1024, f"peak RSS grew by {growth_mb} MB"
    assert left == 0 and right == 255
