"""On-device downloads (static/msw_exports.js in headless Chromium) against the server's
`write_exports`: the same file names, RLEs, boxes, label maps, masks, cut-outs and zips."""

import base64
import io
import json
import os
import shutil
import zipfile

import cv2
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from mobilesam_web.data.boxes import mask_bbox_xywh
from mobilesam_web.data.rle import encode_rle_string, rle_counts
from mobilesam_web.ui.exports import Export, file_stem, records_from_masks, write_exports

from conftest import MOBILESAM_FIXTURE, REPO_ROOT, require
from server_utils import browser, serve_folder

STATIC = REPO_ROOT / "static"
BLANK = b"<!doctype html><meta charset=utf-8><title>exports</title>"

# Page side: base64 in, buildExports, every file back as base64.
RUN_EXPORTS = """async ([rgbaB64, masksB64, w, h, n, scores, name, options]) => {
  const ex = await import("/msw_exports.js");
  const bytes = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const rgba = bytes(rgbaB64);
  const all = bytes(masksB64);
  const objects = scores.map((score, k) => ({mask: all.subarray(k * w * h, (k + 1) * w * h), score}));
  const t0 = performance.now();
  const out = await ex.buildExports({rgba, width: w, height: h, name}, objects, options || {});
  const ms = performance.now() - t0;
  const b64 = (u8) => {
    let s = "";
    for (let i = 0; i < u8.length; i += 0x8000) s += String.fromCharCode.apply(null, u8.subarray(i, i + 0x8000));
    return btoa(s);
  };
  const files = [];
  for (const f of out.files) files.push({name: f.name, type: f.blob.type, b64: b64(new Uint8Array(await f.blob.arrayBuffer()))});
  return {files, summary: out.summary, ms};
}"""


@pytest.fixture(scope="module")
def static_url():
    with serve_folder(STATIC, blobs={"/blank.html": BLANK}) as url:
        yield url


@pytest.fixture(scope="module")
def page(static_url):
    with browser() as b:
        p = b.new_page()
        errors = []
        p.on("pageerror", lambda e: errors.append(str(e)))
        p.goto(static_url + "blank.html")
        p.evaluate("async () => { window.ex = await import('/msw_exports.js'); }")
        yield p
        assert not errors, errors


@pytest.fixture(scope="module")
def image():
    return np.array(Image.open(require(MOBILESAM_FIXTURE / "image.png")).convert("RGB"))


def b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a, np.uint8).tobytes()).decode()


def blob_masks(n, h, w, seed):
    """Deterministic random blobs (filled ellipses, some with holes), overlapping each other."""
    rng = np.random.default_rng(seed)
    masks = []
    for _ in range(n):
        m = np.zeros((h, w), np.uint8)
        for _ in range(int(rng.integers(1, 4))):
            center = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            axes = (int(rng.integers(1, max(2, w // 4))), int(rng.integers(1, max(2, h // 4))))
            cv2.ellipse(m, center, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        if rng.random() < 0.3:
            cv2.circle(
                m, (int(rng.integers(0, w)), int(rng.integers(0, h))), int(rng.integers(1, max(2, h // 8))), 0, -1
            )
        masks.append(m.astype(bool))
    return masks


def special_masks(h, w):
    """An empty mask, a full-height band on the left border, one ending on the very last pixel,
    the whole image, and a one-pixel object in the top-left corner."""
    empty = np.zeros((h, w), bool)
    band = np.zeros((h, w), bool)
    band[:, : w // 5] = True
    band[h // 3 : h // 2, 2] = False
    corner = np.zeros((h, w), bool)
    corner[h - h // 6 :, w - w // 7 :] = True
    whole = np.ones((h, w), bool)
    dot = np.zeros((h, w), bool)
    dot[0, 0] = True
    return [empty, band, corner, whole, dot]


def browser_exports(page, image, masks, scores, name, **options):
    h, w = image.shape[:2]
    rgba = np.dstack([image, np.full((h, w), 255, np.uint8)])
    flat = np.concatenate([m.reshape(-1) for m in masks]) if masks else np.zeros(0, np.uint8)
    res = page.evaluate(RUN_EXPORTS, [b64(rgba), b64(flat), w, h, len(masks), scores, name, options])
    files = {f["name"]: base64.b64decode(f["b64"]) for f in res["files"]}
    types = {f["name"]: f["type"] for f in res["files"]}
    return [f["name"] for f in res["files"]], files, types, res


def server_exports(image, masks, scores, name, **kw):
    out = write_exports(image, records_from_masks(masks, scores), name, **kw)
    try:
        files = {}
        for p in out.paths:
            with open(p, "rb") as f:
                files[os.path.basename(p)] = f.read()
        return [os.path.basename(p) for p in out.paths], files, out
    finally:
        if out.paths:
            shutil.rmtree(os.path.dirname(out.paths[0]), ignore_errors=True)


def png(data: bytes) -> np.ndarray:
    Image.open(io.BytesIO(data)).verify()  # chunk CRCs and structure
    a = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert a is not None, "not a PNG"
    return a


def assert_coco_equal(ours: bytes, theirs: bytes, masks):
    ours, theirs = json.loads(ours), json.loads(theirs)
    assert "polygons" in ours["info"]["note"]
    assert {k: v for k, v in ours.items() if k != "info"} == {
        **theirs,
        "annotations": [{k: v for k, v in a.items() if k != "polygons"} for a in theirs["annotations"]],
    }
    h, w = masks[0].shape if masks else (0, 0)
    for ann, m in zip(ours["annotations"], masks):
        rle = {"size": ann["segmentation"]["size"], "counts": ann["segmentation"]["counts"].encode()}
        assert (mask_utils.decode(rle).astype(bool) == m).all(), ann["id"]
        assert ann["segmentation"]["size"] == [h, w]
        assert ann["area"] == int(m.sum()) and ann["bbox"] == mask_bbox_xywh(m)


def assert_png_pair_equal(name: str, ours: bytes, theirs: bytes, mask=None, encoder="exact"):
    a, b = png(ours), png(theirs)
    assert a.dtype == b.dtype and a.shape == b.shape, (name, a.dtype, a.shape, b.dtype, b.shape)
    if "cutout" in name:
        assert (a[..., 3] == b[..., 3]).all(), name
        inside = b[..., 3] == 255
        assert (a[inside] == b[inside]).all(), name
        if encoder == "exact":  # the RGB under alpha 0 kept too, as the server keeps it
            assert (a == b).all(), name
        else:  # the canvas premultiplies: nothing left of the RGB under alpha 0
            assert (a[~inside] == 0).all(), name
    else:
        assert (a == b).all(), (name, int((a != b).sum()))
    if mask is not None and "mask" in name:
        assert set(np.unique(a).tolist()) <= {0, 255} and ((a > 0) == mask).all(), name


def compare_all(page, image, masks, name, encoder="exact", **kw):
    scores = [round(0.5 + 0.49 * np.sin(i), 6) for i in range(len(masks))]
    names, ours, types, res = browser_exports(page, image, masks, scores, name, cutoutEncoder=encoder, **kw)
    ref_names, theirs, out = server_exports(image, masks, scores, name, **kw)
    assert names == ref_names
    assert res["summary"] == out.summary
    stem = file_stem(name)
    assert_coco_equal(ours[f"coco_{stem}.json"], theirs[f"coco_{stem}.json"], masks)
    assert types[f"coco_{stem}.json"] == "application/json"
    for fname in names:
        if fname.endswith(".png"):
            assert types[fname] == "image/png"
            k = int(fname.split("_")[0]) - 1 if fname[0].isdigit() else None
            assert_png_pair_equal(fname, ours[fname], theirs[fname], None if k is None else masks[k], encoder)
    if masks:
        labels = png(ours[f"labels_{stem}.png"])
        expect = np.zeros(masks[0].shape, np.uint16 if len(masks) > 255 else np.uint8)
        for i, m in enumerate(masks, 1):
            expect[m] = i
        assert labels.dtype == expect.dtype and (labels == expect).all()
    return names, ours, theirs, out, res


@pytest.mark.parametrize("encoder", ["canvas", "exact"])
def test_fixture_image_few_objects(page, image, encoder):
    h, w = image.shape[:2]
    masks = blob_masks(5, h, w, seed=3) + special_masks(h, w)
    assert len(masks) == 10  # the most that are still separate files
    names, ours, theirs, out, _ = compare_all(page, image, masks, "IMG 001 (copy).JPG", encoder)
    assert not out.masks_zipped
    stem = file_stem("IMG 001 (copy).JPG")
    assert names[:4] == [f"coco_{stem}.json", f"labels_{stem}.png", f"01_mask_{stem}.png", f"01_cutout_{stem}.png"]
    assert len(names) == 2 + 2 * len(masks)
    # the empty mask's cut-out is the whole image, fully transparent
    empty = png(ours[f"06_cutout_{stem}.png"])
    assert empty.shape == (h, w, 4) and (empty[..., 3] == 0).all()


def test_zip_of_twelve_objects(page, image):
    img = np.ascontiguousarray(image[100:400, 50:470])
    h, w = img.shape[:2]
    masks = blob_masks(7, h, w, seed=4) + special_masks(h, w)
    assert len(masks) == 12
    names, ours, theirs, out, _ = compare_all(page, img, masks, "photos/holiday.beach.png", "canvas")
    assert out.masks_zipped and names == [
        "coco_holiday.beach.json",
        "labels_holiday.beach.png",
        "masks_holiday.beach.zip",
    ]
    zo = zipfile.ZipFile(io.BytesIO(ours["masks_holiday.beach.zip"]))
    zt = zipfile.ZipFile(io.BytesIO(theirs["masks_holiday.beach.zip"]))
    assert zo.testzip() is None  # every CRC-32 right
    assert zo.namelist() == zt.namelist()
    assert zo.namelist()[:4] == ["mask001.png", "cutout001.png", "mask002.png", "cutout002.png"]
    assert all(i.compress_type == zipfile.ZIP_STORED for i in zo.infolist())
    for member in zo.namelist():
        k = int(member[-7:-4]) - 1
        assert_png_pair_equal(member, zo.read(member), zt.read(member), masks[k], "canvas")


def test_without_cutouts_and_no_objects(page, image):
    img = np.ascontiguousarray(image[:90, :130])
    masks = blob_masks(3, 90, 130, seed=5)
    names, _, _, out, _ = compare_all(page, img, masks, "", cutouts=False)
    assert names == [
        "coco_image.json",
        "labels_image.png",
        "01_mask_image.png",
        "02_mask_image.png",
        "03_mask_image.png",
    ]
    names, ours, _, out, res = compare_all(page, img, [], ".hidden")
    assert names == ["coco_hidden.json"] and res["summary"] == out.summary == "0 objects: COCO JSON, label map"
    assert json.loads(ours["coco_hidden.json"])["images"][0]["file_name"] == ".hidden"


def test_sixteen_bit_label_map(page):
    rng = np.random.default_rng(6)
    img = rng.integers(0, 256, (40, 53, 3), dtype=np.uint8)
    masks = blob_masks(300, 40, 53, seed=7)
    masks[299] = np.zeros((40, 53), bool)  # an empty last object: the label map stays as it was
    names, ours, _, out, _ = compare_all(page, img, masks, "many.png")
    labels = png(ours["labels_many.png"])
    assert labels.dtype == np.uint16 and labels.max() > 255
    assert names[-1] == "masks_many.zip" and len(zipfile.ZipFile(io.BytesIO(ours[names[-1]])).namelist()) == 600


def test_rle_bbox_and_stem_units(page):
    rng = np.random.default_rng(8)
    cases = [np.zeros((5, 7), bool), np.ones((5, 7), bool), np.ones((1, 1), bool), np.zeros((1, 1), bool)]
    for _ in range(150):
        h, w = (int(v) for v in rng.integers(1, 16, 2))
        m = rng.random((h, w)) > rng.random()
        if rng.random() < 0.3:
            m[:, int(rng.integers(0, w))] = True  # full-height columns: runs across column ends
        if rng.random() < 0.3:
            m[:, :] = False
            m[int(rng.integers(0, h)) :, int(rng.integers(0, w)) :] = True  # ends on the last pixel
        cases.append(m)
    big = blob_masks(3, 300, 400, seed=9)
    cases += big
    got = page.evaluate(
        """(cases) => cases.map(([b64, h, w], k) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            // inside a larger buffer at every alignment, with nonzero bytes around it
            const off = k % 4, buf = new Uint8Array(bytes.length + off + (k % 3)).fill(7);
            const m = buf.subarray(off, off + bytes.length);
            m.set(bytes);
            return [window.ex.cocoRle(m, h, w), window.ex.maskBboxXYWH(m, h, w)];
        })""",
        [[b64(m.astype(np.uint8) * (255 if k % 2 else 1)), m.shape[0], m.shape[1]] for k, m in enumerate(cases)],
    )
    for (rle, bbox), m in zip(got, cases):
        assert rle["counts"] == encode_rle_string(rle_counts(m)), m.shape
        assert rle["counts"] == mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))["counts"].decode()
        assert rle["size"] == list(m.shape)
        assert bbox == mask_bbox_xywh(m)

    names = ["IMG 001.jpg", "", "a/b/c.d.e", "...", ".bashrc", "x..y", "__init__.py", "été à paris.png"]
    names += ["a" * 40 + ".png", "abc" + "." * 30, "-._-._x", "日本語の写真.jpeg", "photo.tar.gz", "a/.b.c", "a_b.png."]
    assert page.evaluate("(ns) => ns.map((n) => window.ex.fileStem(n))", names) == [file_stem(n) for n in names]

    for n, zipped, cut in [(0, False, True), (1, False, True), (1, False, False), (2, True, True), (12, True, False)]:
        js = page.evaluate("([n, c, z]) => window.ex.exportSummary(n, c, z)", [n, cut, zipped])
        assert js == Export(objects=n, masks_zipped=zipped, cutouts=cut).summary


def test_runs_in_a_module_worker(page):
    """No DOM needed: the same files from a module Web Worker as from the page."""
    res = page.evaluate(
        """async () => {
            const w = 97, h = 61;
            const make = () => {
                const rgba = new Uint8Array(w * h * 4).map((_, i) => (i * 37) & 255);
                const objects = [0, 1, 2].map((k) => ({
                    mask: new Uint8Array(w * h).map((_, i) => ((i % w) > 10 * k && (i / w | 0) < 20 + 10 * k) ? 1 : 0),
                    score: 0.25 * (k + 1),
                }));
                return [{rgba, width: w, height: h, name: "worker test.png"}, objects];
            };
            const src = `import * as ex from "${location.origin}/msw_exports.js";
                self.onmessage = async (e) => {
                    try {
                        const out = await ex.buildExports(...e.data);
                        const files = [];
                        for (const f of out.files) files.push([f.name, Array.from(new Uint8Array(await f.blob.arrayBuffer()))]);
                        self.postMessage({files, summary: out.summary, encoder: ex.DEFAULT_CUTOUT_ENCODER});
                    } catch (err) { self.postMessage({error: String((err && err.stack) || err)}); }
                };`;
            const worker = new Worker(URL.createObjectURL(new Blob([src], {type: "text/javascript"})), {type: "module"});
            const inWorker = await new Promise((resolve, reject) => {
                worker.onmessage = (e) => resolve(e.data);
                worker.onerror = (e) => reject(new Error(e.message || "worker failed"));
                worker.postMessage(make());
            });
            worker.terminate();
            const out = await window.ex.buildExports(...make());
            const files = [];
            for (const f of out.files) files.push([f.name, Array.from(new Uint8Array(await f.blob.arrayBuffer()))]);
            return {inWorker, page: {files, summary: out.summary, encoder: window.ex.DEFAULT_CUTOUT_ENCODER}};
        }"""
    )
    worker, here = res["inWorker"], res["page"]
    assert "error" not in worker, worker.get("error")
    assert worker["encoder"] == here["encoder"] == "canvas"
    assert worker["summary"] == here["summary"] == "3 objects: COCO JSON, label map, 3 masks + 3 cut-outs"
    assert [n for n, _ in worker["files"]] == [n for n, _ in here["files"]]
    assert len(worker["files"]) == 8
    for (name, a), (_, b) in zip(worker["files"], here["files"]):
        if name.endswith(".png"):
            assert (png(bytes(a)) == png(bytes(b))).all(), name
        else:
            assert a == b, name


def test_make_zip_reads_back(page):
    files = page.evaluate(
        """() => {
            const enc = new TextEncoder();
            const files = [
                {name: "a.txt", bytes: enc.encode("hello")},
                {name: "empty.bin", bytes: new Uint8Array(0)},
                {name: "dir/été.bin", bytes: Uint8Array.from({length: 70000}, (_, i) => (i * 7919) & 255)},
            ];
            return Array.from(window.ex.makeZip(files));
        }"""
    )
    z = zipfile.ZipFile(io.BytesIO(bytes(files)))
    assert z.testzip() is None
    assert z.namelist() == ["a.txt", "empty.bin", "dir/été.bin"]
    assert z.read("a.txt") == b"hello" and z.read("empty.bin") == b""
    assert z.read("dir/été.bin") == bytes((i * 7919) & 255 for i in range(70000))


def test_twelve_megapixels_twenty_objects_is_fast(page):
    """4000x3000 photo-like image, 20 blobs (one a full-height band): a few seconds at most."""
    res = page.evaluate(
        """async () => {
            const w = 4000, h = 3000, n = 20;
            const rgba = new Uint8ClampedArray(w * h * 4);
            let s = 12345;
            for (let y = 0, i = 0; y < h; y++) for (let x = 0; x < w; x++, i += 4) {
                s = (s * 1103515245 + 12345) >>> 0;
                const noise = s >>> 28;
                rgba[i] = (x >> 4) + noise; rgba[i + 1] = (y >> 4) + noise; rgba[i + 2] = ((x + y) >> 5) + noise;
                rgba[i + 3] = 255;
            }
            const objects = [];
            for (let k = 0; k < n; k++) {
                const mask = new Uint8Array(w * h);
                const cx = (k * 977) % w, cy = (k * 613) % h, rx = 200 + (k * 131) % 900, ry = 150 + (k * 71) % 700;
                for (let y = Math.max(0, cy - ry); y < Math.min(h, cy + ry); y++) {
                    const dy = (y - cy) / ry, half = Math.floor(rx * Math.sqrt(Math.max(0, 1 - dy * dy)));
                    mask.fill(1, y * w + Math.max(0, cx - half), y * w + Math.min(w, cx + half));
                }
                if (k === 0) for (let y = 0; y < h; y++) mask.fill(1, y * w, y * w + 300);
                objects.push({mask, score: 0.9});
            }
            const t0 = performance.now();
            const out = await window.ex.buildExports({rgba, width: w, height: h, name: "big.jpg"}, objects);
            const ms = performance.now() - t0;
            let bytes = 0;
            for (const f of out.files) bytes += f.blob.size;
            return {ms, names: out.files.map((f) => f.name), bytes, summary: out.summary};
        }"""
    )
    print(f"\n12 MP, 20 objects: {res['ms']:.0f} ms, {res['bytes'] / 1e6:.1f} MB in {len(res['names'])} files")
    assert res["names"][:3] == ["coco_big.json", "labels_big.png", "masks_big.zip"]
    assert res["summary"] == "20 objects: COCO JSON, label map, 20 masks + 20 cut-outs (zip)"
