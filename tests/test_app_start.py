"""The app builds with and without weights (without: it shows the actionable message), over a
typed context and nothing attached to the Blocks; its layout hooks and labels are in place."""

import dataclasses

import gradio as gr
import numpy as np
import pytest

from mobilesam_web.ui import AppContext, build_app, create_app
from mobilesam_web.ui.services import AppConfig, Services
from mobilesam_web.ui.web import EmbeddingStore


def test_app_builds_without_weights(tmp_path):
    demo = build_app(checkpoint=str(tmp_path / "missing.pt"))
    assert isinstance(demo, gr.Blocks)
    texts = [getattr(b, "value", "") for b in demo.blocks.values()]
    assert any("missing.pt" in str(t) and "unavailable" in str(t) for t in texts)


def test_app_builds_with_weights(sam_weights_path, shared_onnx_cache, monkeypatch):
    monkeypatch.setenv("MOBILESAM_ONNX_CACHE", shared_onnx_cache)  # not an export into the checkout's onnx/
    assert isinstance(build_app(checkpoint=str(sam_weights_path)), gr.Blocks)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    return create_app(config=AppConfig(checkpoint=str(tmp_path_factory.mktemp("w") / "missing.pt")))


def test_create_app_returns_the_context_and_attaches_nothing(app):
    demo, ctx = app
    fields = [f.name for f in dataclasses.fields(AppContext)]
    assert fields == ["services", "store", "config", "browser_available", "budget", "blocks"]
    assert ctx.blocks is demo
    assert isinstance(ctx.services, Services) and isinstance(ctx.store, EmbeddingStore)
    assert ctx.budget.max_bytes == int(ctx.config.session_budget_mb * 2**20)
    assert ctx.config is ctx.services.config and ctx.browser_available is False
    assert not hasattr(demo, "services") and not hasattr(demo, "embedding_store")
    for name, value in vars(demo).items():
        assert not isinstance(value, (Services, EmbeddingStore, AppContext)), name
    assert demo.has_launched  # the upload rule is active however the app is served


def component(demo, elem_id):
    found = [c for c in demo.config["components"] if c["props"].get("elem_id") == elem_id]
    assert len(found) == 1, elem_id
    return found[0]["props"]


def test_layout_hooks_and_labels(app):
    demo, _ = app
    for elem_id in (
        "msw-seg-row",
        "msw-controls",
        "msw-main",
        "msw-ev-row",
        "msw-ev-controls",
        "msw-ev-main",
        "msw-upload",
        "msw-browser-toggle",
        "msw-mode",
        "msw-widget",
        "msw-canvas",
        "msw-status",
        "msw-candidates",
        "msw-ev-upload",
        "msw-objects",
        "msw-export",
        "msw-ev-run",
        "msw-ev-files",
        "msw-ev-status",
        "msw-files",
        "msw-examples",
        "msw-ev-examples",
    ):
        component(demo, elem_id)
    # Downloads appear once there is something to download
    assert component(demo, "msw-files")["visible"] is False
    assert component(demo, "msw-ev-files")["visible"] is False
    for c in demo.config["components"]:
        p = c["props"]
        if c["type"] in ("file", "checkbox", "radio", "slider", "dataframe", "gallery", "image", "dataset"):
            assert p.get("label"), (c["type"], p.get("elem_id"))
        if c["type"] == "button":
            assert p.get("value"), p.get("elem_id")


def test_grid_comparison_can_be_cancelled(app):
    """Cancel is our own (the run stops itself, test_ui_handlers): Gradio's `cancels=` would mark
    the stopped run as an error (#21 item 5)."""
    demo, _ = app
    deps = demo.config["dependencies"]
    grid = next(i for i, d in enumerate(deps) if d["api_name"] == "on_grid")
    cancel_button = next(d for d in deps if d["api_name"] == "on_grid_cancel")["targets"]
    assert cancel_button and not any(grid in d.get("cancels", []) for d in deps)


def test_mounted_build_app_serves(tmp_path):
    """build_app() in someone else's FastAPI app: the page and the config answer."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    app = gr.mount_gradio_app(FastAPI(), build_app(checkpoint=str(tmp_path / "missing.pt")), path="/")
    with TestClient(app) as client:
        assert client.get("/").status_code == 200
        config = client.get("/config").json()
        assert any(c["props"].get("elem_id") == "msw-widget" for c in config["components"])


def test_examples_are_copied_into_the_upload_folder_and_kept(app):
    """Clicks on examples hand the handlers Gradio's copies, inside the upload folder (which the
    upload rule accepts); delete_cache must not expire them while the app runs."""
    from mobilesam_web.ui.examples import EXAMPLES, example_files
    from mobilesam_web.ui.sessions import is_uploaded

    demo, _ = app
    assert [p.name for p in example_files()] == [name for name, _ in EXAMPLES]
    for elem_id in ("msw-upload", "msw-ev-upload"):
        upload = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == elem_id)
        kept = sorted(upload.keep_in_cache)
        assert sorted(p.rsplit("/", 1)[1] for p in kept) == sorted(name for name, _ in EXAMPLES)
        assert all(is_uploaded(p) for p in kept)
    dataset = component(demo, "msw-examples")
    assert dataset["sample_labels"] == [label for _, label in EXAMPLES]


def test_gzip_copies_are_kept_on_disk_for_the_next_start(tmp_path, monkeypatch):
    """A restarted server reads the copies the last one made (the WASM runtimes at level 6 cost
    ~6 s of one core per start); a copy whose trailer doesn't match the file is made again, and a
    store that can't be written only costs the disk copy."""
    import gzip

    from mobilesam_web.ui import compressed
    from mobilesam_web.ui.compressed import CompressedFiles

    rng = np.random.default_rng(0)
    runtime = tmp_path / "ort.wasm"
    runtime.write_bytes(rng.integers(0, 4, 300_000, dtype=np.uint8).tobytes())
    store = tmp_path / "gzip"
    first = CompressedFiles(store).gzipped(runtime)
    assert gzip.decompress(first) == runtime.read_bytes()
    assert [p.name for p in store.iterdir()] == [kept.name for kept in store.glob("*-6.wasm.gz")]  # no temp file
    (kept,) = store.glob("*.wasm.gz")
    assert kept.read_bytes() == first and kept.stat().st_mode & 0o777 == 0o644  # another user's server reads it

    def no_compression(*args, **kwargs):
        raise AssertionError("compressed again")

    with monkeypatch.context() as m:
        m.setattr(compressed.gzip, "compress", no_compression)
        assert CompressedFiles(store).gzipped(runtime) == first  # read back, not compressed
    # a copy that isn't this file's (another file's bytes under its name): made again, replaced
    other = tmp_path / "other.wasm"
    other.write_bytes(b"something else" * 1000)
    kept.write_bytes(CompressedFiles().gzipped(other))
    assert gzip.decompress(CompressedFiles(store).gzipped(runtime)) == runtime.read_bytes()
    assert kept.read_bytes() == first
    # the same bytes at another path, or after a touch: the copy still serves
    runtime.touch()
    assert CompressedFiles(store).gzipped(runtime) == first

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:  # a write that fails leaves no temp file, and the copy still serves
        m.setattr(compressed.os, "replace", full_disk)
        assert CompressedFiles(tmp_path / "full").gzipped(runtime) == first
    assert list((tmp_path / "full").iterdir()) == []
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the store should be")
    assert gzip.decompress(CompressedFiles(blocked / "gzip").gzipped(runtime)) == runtime.read_bytes()
