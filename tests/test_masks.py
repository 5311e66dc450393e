"""RLE encodings against pycocotools, and mask boxes against a direct computation."""

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from mobilesam_web.data.boxes import masks_to_boxes, nms
from mobilesam_web.data.rle import (
    area_from_rle,
    decode_rle_string,
    encode_rle_string,
    mask_to_coco_rle,
    masks_to_rle,
    rle_to_mask,
)


@pytest.mark.parametrize("seed", range(4))
def test_coco_rle_matches_pycocotools(seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((37, 53)) > (0.3 + 0.1 * seed)
    mask[0, 0] = bool(seed % 2)
    ours = mask_to_coco_rle(mask)
    ref = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    assert ours["counts"] == ref["counts"].decode()
    assert ours["size"] == list(ref["size"])
    assert (rle_to_mask(ours) == mask).all()
    assert area_from_rle(ours) == int(mask.sum())


def test_uncompressed_rle_roundtrip_and_string_codec():
    rng = np.random.default_rng(7)
    masks = torch.as_tensor(rng.random((3, 20, 30)) > 0.5)
    for m, rle in zip(masks, masks_to_rle(masks)):
        assert (rle_to_mask(rle) == m.numpy()).all()
        assert decode_rle_string(encode_rle_string(rle["counts"])) == rle["counts"]


def test_masks_to_boxes():
    m = torch.zeros(3, 10, 12, dtype=torch.bool)
    m[0, 2:5, 3:8] = True
    m[1, 9, 11] = True
    boxes = masks_to_boxes(m)
    assert boxes.tolist() == [[3, 2, 7, 4], [11, 9, 11, 9], [0, 0, 0, 0]]


def random_boxes(seed, n, spread, min_side, extra):
    """n xyxy boxes (corners in [0, spread), sides min_side + [0, extra)) and their scores."""
    rng = np.random.default_rng(seed)
    xy = rng.random((n, 2)) * spread
    boxes = np.concatenate([xy, xy + min_side + rng.random((n, 2)) * extra], 1).astype(np.float32)
    return boxes, rng.random(n).astype(np.float32)


def test_nms_matches_bruteforce():
    boxes, scores = random_boxes(seed=3, n=60, spread=50, min_side=5, extra=30)
    keep = nms(boxes, scores, 0.5)

    def iou(a, b):
        w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = w * h
        return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)

    expected = []
    for i in np.argsort(-scores, kind="stable"):
        if all(iou(boxes[i], boxes[j]) <= 0.5 for j in expected):
            expected.append(i)
    assert keep.tolist() == expected
    assert 0 < len(keep) < 60


def test_nms_max_keep_is_a_prefix():
    boxes, scores = random_boxes(seed=5, n=300, spread=100, min_side=10, extra=40)
    full = nms(boxes, scores, 0.6)
    assert len(full) > 20
    assert nms(boxes, scores, 0.6, max_keep=20).tolist() == full[:20].tolist()


@pytest.mark.parametrize(
    "input_size,size,block_pixels",
    [
        ((768, 1024), (3000, 4000), 1 << 19),  # a 12 MP photo: transposed rows in several blocks
        ((1024, 683), (1500, 1000), 3000),  # blocks of two rows: every block edge is a run edge
        ((1024, 1024), (333, 333), 1 << 19),  # one block
        ((16, 1024), (40, 2560), 40),  # a wide strip: one (transposed) row per block
    ],
)
def test_low_res_to_coco_rle_equals_the_dense_mask(monkeypatch, input_size, size, block_pixels):
    """The transposed, framed, block-by-block RLE equals pycocotools on the dense mask, with the
    same box and area, for masks that fill the frame, touch its edges or are dotted with holes."""
    from mobilesam_web.data import upscale
    from mobilesam_web.data.rle import low_res_to_coco_rle
    from mobilesam_web.data.upscale import mask_from_low_res

    monkeypatch.setattr(upscale, "CV_BLOCK_PIXELS", block_pixels)
    rng = np.random.default_rng(sum(size))
    yy, xx = np.mgrid[:256, :256]
    cases = [
        rng.normal(0.5, 1.0, (256, 256)),  # mostly on, dotted with holes (random weights' masks)
        8.0 - np.hypot(yy - 40, xx - 200) / 4,  # a blob near an edge
        np.ones((256, 256)),  # everything
        -np.ones((256, 256)),  # nothing
    ]
    for low in cases:
        low = low.astype(np.float32)
        dense = mask_from_low_res(low, input_size, size)
        rle, bounds, area = low_res_to_coco_rle(low, input_size, size)
        ref = mask_utils.encode(np.asfortranarray(dense.astype(np.uint8)))
        assert rle["counts"] == ref["counts"].decode() and rle["size"] == list(size)
        assert area == int(dense.sum())
        if area:
            ys, xs = np.nonzero(dense)
            assert bounds == (xs.min(), ys.min(), xs.max(), ys.max())
        else:
            assert bounds is None
