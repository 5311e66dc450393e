"""`python -m mobilesam_web export-site OUT_DIR`: the folder, served by plain static file servers
(one without and one with COOP/COEP headers), segments an image in Debian's Chromium with no
application server at all."""

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import MOBILESAM_FIXTURE, REPO_ROOT
from server_utils import browser, free_port, screenshot_on_failure, serve_folder

IMAGE = MOBILESAM_FIXTURE / "image.png"


@pytest.fixture(scope="module")
def site(sam_weights_path, shared_onnx_cache, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site") / "public"
    env = {**os.environ, "MOBILESAM_ONNX_CACHE": shared_onnx_cache}
    cmd = [sys.executable, "-m", "mobilesam_web", "export-site", str(out), "--checkpoint", str(sam_weights_path)]
    run = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    return out


@contextlib.contextmanager
def plain_static_server(folder: Path):
    """`python -m http.server`, as a visitor's host might be: no special headers."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import time
        import urllib.request

        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        proc.wait(10)


def isolating_static_server(folder: Path):
    """A host that applies the site's _headers file (as Netlify and Cloudflare Pages do)."""
    lines = (folder / "_headers").read_text().splitlines()
    return serve_folder(
        folder, headers=[ln.strip().split(": ", 1) for ln in lines if ln.startswith(" ") and ": " in ln]
    )


def segment_on_site(b, url: str):
    page = b.new_page(viewport={"width": 1280, "height": 900})
    page.goto(url)
    page.wait_for_function("window.mswDebug && (window.mswDebug.ready || window.mswDebug.error)", timeout=180_000)
    assert page.evaluate("window.mswDebug.error || null") is None
    page.wait_for_function("window.mswDebug.encoderReady === true", timeout=120_000)
    page.locator(".msw-open input[type=file]").set_input_files(str(IMAGE))
    page.wait_for_function("window.mswDebug.imageReady", timeout=240_000)
    box = page.locator(".msw-overlay").bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.5)
    page.wait_for_function("window.mswDebug.clicks.length >= 1", timeout=60_000)
    painted = page.evaluate(
        """() => { const c = document.querySelector('.msw-overlay');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
        for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; }"""
    )
    assert painted > 100, "no mask was drawn"
    return page


def test_site_folder(site):
    cfg = json.loads((site / "config.json").read_text())
    for key in ("decoder", "decoder_fast", "encoder"):
        rel = cfg[key]["url"].split("?")[0]
        assert not rel.startswith("/") and (site / rel).stat().st_size == cfg[key]["bytes"]
    assert set(cfg["ort"]["bundles"]) == {"wasm", "webgpu"}
    for bundle in cfg["ort"]["bundles"].values():
        for f in ("main", "glue", "wasm"):
            assert (site / cfg["ort"]["base"] / bundle[f]).is_file()
    app = re.search(r'from "\./(app/[0-9a-f]{12}/)msw_canvas\.js"', (site / "index.html").read_text()).group(1)
    for name in ("msw_canvas.js", "msw_worker.js", "msw_runtime.js", "msw_resize.js", "msw_exports.js"):
        assert (site / app / name).read_bytes() == (REPO_ROOT / "static" / name).read_bytes(), name
    assert (site / "_headers").is_file()
    assert "Cross-Origin-Embedder-Policy" in (site / "_headers").read_text()
    card = (site / "README.md").read_text()  # a Hugging Face static Space, isolated
    assert "sdk: static" in card and "cross-origin-embedder-policy: require-corp" in card
    assert "/msw/" not in json.dumps(cfg)  # nothing points at an application server


def export_site(out, *extra):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "mobilesam_web", "export-site", str(out), *extra]
    return subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_without_webgpu_and_never_over_other_files(sam_weights_path, shared_onnx_cache, tmp_path, monkeypatch):
    """--no-webgpu (Cloudflare Pages: no file over 25 MiB); a folder holding other files is refused
    (no README or index.html of the visitor's is overwritten) unless --force; an earlier site is
    replaced."""
    monkeypatch.setenv("MOBILESAM_ONNX_CACHE", shared_onnx_cache)
    ckpt = ["--checkpoint", str(sam_weights_path)]
    small = tmp_path / "small"
    run = export_site(small, *ckpt, "--no-webgpu")
    assert run.returncode == 0, run.stderr
    assert set(json.loads((small / "config.json").read_text())["ort"]["bundles"]) == {"wasm"}
    assert max(f.stat().st_size for f in small.rglob("*") if f.is_file()) < 25 * 2**20
    again = export_site(small, *ckpt, "--no-webgpu")  # our own earlier site: replaced
    assert again.returncode == 0, again.stderr
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "README.md").write_text("my notes")
    refused = export_site(mine, *ckpt)
    assert refused.returncode == 2 and "not empty" in refused.stderr and "Traceback" not in refused.stderr
    assert (mine / "README.md").read_text() == "my notes"
    forced = export_site(mine, *ckpt, "--force", "--no-webgpu")
    assert forced.returncode == 0 and (mine / "index.html").is_file()


def test_plain_static_host_one_thread(site):
    with plain_static_server(site) as url, browser() as b:
        page = segment_on_site(b, url)
        with screenshot_on_failure(page, "site_plain"):
            assert page.evaluate("self.crossOriginIsolated") is False
            assert page.evaluate("window.mswDebug.threads") == 1
            assert page.locator(".msw-device").is_hidden()  # the site has no other mode to switch to
            page.locator("[data-act=export]").click()
            page.wait_for_function("window.mswDebug.downloads", timeout=60_000)
            assert "coco_image.json" in page.evaluate("window.mswDebug.downloads")


def test_isolating_host_gets_threads(site):
    with isolating_static_server(site) as url, browser() as b:
        page = segment_on_site(b, url)
        with screenshot_on_failure(page, "site_isolated"):
            assert page.evaluate("self.crossOriginIsolated") is True
            assert page.evaluate("window.mswDebug.threads") >= 2


def test_offline_without_checkpoint_says_what_to_do(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MOBILESAM_CHECKPOINT": ""}
    run = subprocess.run(
        [sys.executable, "-m", "mobilesam_web", "export-site", str(tmp_path / "out")],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    assert "--checkpoint" in run.stderr and "Traceback" not in run.stderr


def test_runtime_from_the_pinned_cdn_when_not_installed(tmp_path, monkeypatch):
    """An installed package has no static/node_modules: the runtime comes from the pinned CDN URL,
    checked against the pinned sha384 (here a local stand-in for the CDN); a changed file is refused."""
    from mobilesam_web import browser_runtime as web
    from mobilesam_web import site

    cdn = tmp_path / "cdn"
    cdn.mkdir()
    for name in web.ORT_SRI:
        shutil.copyfile(web.ORT_LOCAL / name, cdn / name)
    with plain_static_server(cdn) as url:
        monkeypatch.setattr(web, "ORT_LOCAL", tmp_path / "not-installed")
        monkeypatch.setattr(web, "ORT_CDN", url)
        site.copy_ort(tmp_path / "ok")
        for name in web.ORT_SRI:
            assert (tmp_path / "ok" / name).read_bytes() == (cdn / name).read_bytes()
        (cdn / "ort-wasm-simd-threaded.wasm").write_bytes(b"tampered")
        with pytest.raises(site.SiteError, match="sha384"):
            site.copy_ort(tmp_path / "bad")
    monkeypatch.setattr(web, "ORT_CDN", "http://127.0.0.1:9/")  # nothing listens there (offline)
    with pytest.raises(site.SiteError, match="npm ci --prefix static") as offline:
        site.copy_ort(tmp_path / "offline")
    # an installed package offline is told exactly how (#22 item 6): the npm package, --runtime-dir
    assert f"npm pack onnxruntime-web@{web.ORT_VERSION}" in str(offline.value) and "--runtime-dir" in str(offline.value)
    dist = tmp_path / "package" / "dist"  # an unpacked `npm pack`
    dist.mkdir(parents=True)
    for name in web.ORT_SRI:
        shutil.copyfile(cdn / name, dist / name)
    shutil.copyfile(tmp_path / "ok" / "ort-wasm-simd-threaded.wasm", dist / "ort-wasm-simd-threaded.wasm")
    site.copy_ort(tmp_path / "given", runtime_dir=dist)
    assert sorted(p.name for p in (tmp_path / "given").iterdir()) == sorted(
        {f for b in web.ORT_BUNDLES.values() for f in b.values()}
    )
    (dist / "ort-wasm-simd-threaded.wasm").write_bytes(b"another version")
    with pytest.raises(site.SiteError, match="sha384"):
        site.copy_ort(tmp_path / "wrong", runtime_dir=dist)
    with pytest.raises(site.SiteError, match="has no"):
        site.copy_ort(tmp_path / "empty", runtime_dir=tmp_path / "nothing-here")


def test_a_failed_export_leaves_nothing_behind(sam_weights_path, shared_onnx_cache, tmp_path, monkeypatch):
    """The runtime can't be had (not installed, offline): the new folder is gone again and the
    same command, once the runtime is there, is not refused ("not empty")."""
    from mobilesam_web import browser_runtime as web
    from mobilesam_web import site

    monkeypatch.setenv("MOBILESAM_ONNX_CACHE", shared_onnx_cache)
    installed = web.ORT_LOCAL
    monkeypatch.setattr(web, "ORT_LOCAL", tmp_path / "not-installed")
    monkeypatch.setattr(web, "ORT_CDN", "http://127.0.0.1:9/")
    out, empty = tmp_path / "new", tmp_path / "empty"
    empty.mkdir()
    for folder in (out, empty):
        with pytest.raises(site.SiteError, match="could not be downloaded"):
            site.export_site(folder, sam_weights_path, webgpu=False)
    assert not out.exists() and list(empty.iterdir()) == []
    monkeypatch.setattr(web, "ORT_LOCAL", installed)
    assert site.export_site(out, sam_weights_path, webgpu=False) == out and (out / "index.html").is_file()


def test_the_site_introduces_itself(site):
    """#21 item 13: what it is and what the buttons do in two lines, links to the project, the
    controls once there is an image, and a status line in the visitor's words."""
    with plain_static_server(site) as url, browser() as b:
        page = b.new_page(viewport={"width": 1280, "height": 900})
        with screenshot_on_failure(page, "site_intro"):
            page.goto(url)
            page.wait_for_function("window.mswDebug && window.mswDebug.encoderReady === true", timeout=180_000)
            lead, how = page.locator(".lead").inner_text(), page.locator(".how").inner_text()
            assert "never uploaded" in lead and "Keep object" in how and "Box" in how and "Export" in how
            links = page.eval_on_selector_all(".lead a", "as => as.map(a => a.href)")
            assert any("mobilesam-web" in h for h in links) and any("MobileSAM" in h for h in links)
            assert page.locator(".msw-bar").is_hidden() and page.locator("[data-act=keep]").is_hidden()
            shown = page.locator(".msw-info").inner_text()
            assert "WASM" not in shown and "decoder" not in shown, shown
            page.locator(".msw-open input[type=file]").set_input_files(str(IMAGE))
            page.wait_for_function("window.mswDebug.imageReady", timeout=240_000)
            assert page.locator("[data-act=keep]").is_visible() and page.locator("[data-act=export]").is_visible()
