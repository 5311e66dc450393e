"""static/msw_resize.js in Debian's Chromium: byte-equal to Pillow's BILINEAR resize (apply_image)."""

import base64

import numpy as np
import pytest
from PIL import Image

from mobilesam_web.engine.transforms import ResizeLongestSide, get_preprocess_shape

from conftest import MOBILESAM_FIXTURE, REPO_ROOT, require
from server_utils import blank_page

STATIC = REPO_ROOT / "static"
BLOBS: dict[str, bytes] = {"/__blank.html": b"<!doctype html><title>resize</title>"}

RESIZE_JS = """async ([name, w, h, ow, oh]) => {
  const { resizeRGB } = await import("/msw_resize.js");
  const rgba = new Uint8Array(await (await fetch("/__blob/" + name)).arrayBuffer());
  const out = resizeRGB(rgba, w, h, ow, oh);
  let s = "";
  for (let i = 0; i < out.length; i += 0x8000) s += String.fromCharCode.apply(null, out.subarray(i, i + 0x8000));
  return { type: out.constructor.name, b64: btoa(s) };
}"""


@pytest.fixture(scope="module")
def page():
    with blank_page(STATIC, BLOBS) as pg:
        yield pg


def js_resize(page, rgb: np.ndarray, out_h: int, out_w: int, seed: int = 0) -> np.ndarray:
    """Resize in the page; the alpha channel sent along is noise, which the module must ignore."""
    h, w = rgb.shape[:2]
    alpha = np.random.default_rng(seed).integers(0, 256, (h, w, 1), dtype=np.uint8)
    name = f"{len(BLOBS)}"
    BLOBS["/__blob/" + name] = np.concatenate([rgb, alpha], axis=2).tobytes()
    try:
        res = page.evaluate(RESIZE_JS, [name, w, h, out_w, out_h])
    finally:
        del BLOBS["/__blob/" + name]
    assert res["type"] == "Uint8Array"
    out = np.frombuffer(base64.b64decode(res["b64"]), np.uint8)
    assert out.size == out_h * out_w * 3, (out.size, out_h, out_w)
    return out.reshape(out_h, out_w, 3)


def assert_apply_image_equal(page, rgb: np.ndarray) -> None:
    ref = ResizeLongestSide(1024).apply_image(rgb)
    ours = js_resize(page, rgb, *ref.shape[:2])
    if not np.array_equal(ours, ref):
        diff = ours.astype(int) - ref
        raise AssertionError(
            f"{rgb.shape[:2]} -> {ref.shape[:2]}: {int((diff != 0).sum())} bytes differ, max |diff| {np.abs(diff).max()}"
        )


def noise(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_parity_fixture(page):
    rgb = np.array(Image.open(require(MOBILESAM_FIXTURE / "image.png")).convert("RGB"))
    assert max(rgb.shape[:2]) != 1024  # the resize really runs
    assert_apply_image_equal(page, rgb)


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee"])
def test_examples(page, name):
    assert_apply_image_equal(page, np.array(Image.open(REPO_ROOT / "examples" / f"{name}.jpg").convert("RGB")))


@pytest.mark.parametrize(
    "h, w",
    [
        (2000, 3000),  # downscale
        (3001, 2000),
        (9, 17),  # large upscales
        (5, 1),
        (300, 1025),  # only the width changes
        (3, 5000),  # extreme aspect
        (5000, 3),  # taller than 100x its width: Pillow runs the vertical pass first
        (4321, 40),
        (1500, 14),  # tall but within 100x
    ],
)
def test_noise(page, h, w):
    assert_apply_image_equal(page, noise(h, w, h * 7919 + w))


def test_long_side_1024_unchanged(page):
    rgb = noise(1024, 683, 1)
    assert get_preprocess_shape(1024, 683, 1024) == (1024, 683)
    assert np.array_equal(js_resize(page, rgb, 1024, 683), rgb)


@pytest.mark.parametrize("h, w, oh, ow", [(37, 53, 100, 20), (640, 480, 33, 700), (8, 8, 1, 1), (1, 1, 3, 2)])
def test_arbitrary_sizes(page, h, w, oh, ow):
    """Shrinking one axis while growing the other, and degenerate sizes, straight against Pillow."""
    rgb = noise(h, w, h + w)
    ref = np.array(Image.fromarray(rgb).resize((ow, oh), Image.BILINEAR))
    assert np.array_equal(js_resize(page, rgb, oh, ow), ref)


MANY_JS = """async (cases) => {
  const { resizeRGB } = await import("/msw_resize.js");
  const all = new Uint8Array(await (await fetch("/__blob/many")).arrayBuffer());
  let off = 0;
  let s = "";
  for (const [h, w, oh, ow] of cases) {
    s += String.fromCharCode.apply(null, resizeRGB(all.subarray(off, off + h * w * 4), w, h, ow, oh));
    off += h * w * 4;
  }
  return btoa(s);
}"""


def test_many_small_sizes(page):
    """200 random small size pairs (some taller than 100x their width) in one page call."""
    rng = np.random.default_rng(2)
    cases = [[int(v) for v in rng.integers(1, 40, 4)] for _ in range(180)]
    cases += [
        [int(rng.integers(101, 400)), int(rng.integers(1, 3)), int(rng.integers(1, 100)), int(rng.integers(1, 5))]
        for _ in range(20)
    ]
    images = [noise(h, w, i) for i, (h, w, _, _) in enumerate(cases)]
    rgba = [np.concatenate([im, np.full(im.shape[:2] + (1,), 255, np.uint8)], axis=2) for im in images]
    BLOBS["/__blob/many"] = b"".join(a.tobytes() for a in rgba)
    try:
        got = np.frombuffer(base64.b64decode(page.evaluate(MANY_JS, cases)), np.uint8)
    finally:
        del BLOBS["/__blob/many"]
    off = 0
    for im, (h, w, oh, ow) in zip(images, cases):
        ref = np.array(Image.fromarray(im).resize((ow, oh), Image.BILINEAR))
        ours = got[off : off + ref.size].reshape(ref.shape)
        off += ref.size
        assert np.array_equal(ours, ref), ((h, w), (oh, ow))
    assert off == got.size


def test_preprocess_shape(page):
    rng = np.random.default_rng(0)
    pairs = rng.integers(1, 8000, (300, 2)).tolist()
    # scales 1/2, 1/4, 2, 1.6, 0.8 ... make h * scale + 0.5 land on x.0 exactly, or just below/above
    for long_side in (512, 640, 1023, 1025, 1280, 2048, 4096, 3000, 6000):
        pairs += [[x, long_side] for x in (1, 3, 5, 7, 99, 333, 511, 1023, 1025)]
        pairs += [[long_side, x] for x in (1, 3, 5, 7, 99, 333, 511, 1023, 1025)]
    got = page.evaluate(
        """async (pairs) => {
          const { preprocessShape } = await import("/msw_resize.js");
          return [pairs.map(([h, w]) => preprocessShape(h, w)), pairs.map(([h, w]) => preprocessShape(h, w, 640))];
        }""",
        pairs,
    )
    assert got[0] == [list(get_preprocess_shape(h, w, 1024)) for h, w in pairs]
    assert got[1] == [list(get_preprocess_shape(h, w, 640)) for h, w in pairs]
