"""Mask encodings: uncompressed and COCO-compressed RLE, areas, stability scores."""
from typing import Any, Dict, List

import numpy as np
import torch


def masks_to_rle(masks: torch.Tensor) -> List[Dict[str, Any]]:
    """(B, H, W) bool -> uncompressed COCO RLE dicts {"size": [H, W], "counts": [...]}.

    Counts run over the mask in column-major (Fortran) order and start with a run of zeros.
    """
    b, h, w = masks.shape
    if b == 0:
        return []
    flat = masks.permute(0, 2, 1).reshape(b, h * w)
    out = []
    for i in range(b):
        change = torch.nonzero(flat[i, 1:] != flat[i, :-1]).flatten() + 1
        idx = torch.cat([change.new_zeros(1), change, change.new_tensor([h * w])])
        runs = (idx[1:] - idx[:-1]).tolist()
        counts = ([0] if bool(flat[i, 0]) else []) + runs
        out.append({"size": [h, w], "counts": counts})
    return out


def rle_to_mask(rle: Dict[str, Any]) -> np.ndarray:
    """Uncompressed or compressed RLE -> (H, W) bool."""
    h, w = rle["size"]
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        counts = decode_rle_string(counts)
    flat = np.zeros(h * w, dtype=bool)
    pos, val = 0, False
    for c in counts:
        if val:
            flat[pos:pos + c] = True
        pos += c
        val = not val
    return flat.reshape(w, h).T


def area_from_rle(rle: Dict[str, Any]) -> int:
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        counts = decode_rle_string(counts)
    return int(sum(counts[1::2]))


def encode_rle_string(counts: List[int]) -> str:
    """COCO's compact string form of RLE counts (as pycocotools' rleToString)."""
    chars = []
    for i, x in enumerate(counts):
        x = int(x)
        if i > 2:
            x -= int(counts[i - 2])
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            chars.append(chr(c + 48))
    return "".join(chars)


def decode_rle_string(s) -> List[int]:
    """Inverse of `encode_rle_string`."""
    if isinstance(s, bytes):
        s = s.decode("ascii")
    counts: List[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def coco_rle(rle: Dict[str, Any]) -> Dict[str, Any]:
    """Uncompressed RLE -> COCO compressed RLE {"size": [H, W], "counts": str}."""
    return {"size": list(rle["size"]), "counts": encode_rle_string(rle["counts"])}


def mask_to_coco_rle(mask: np.ndarray) -> Dict[str, Any]:
    return coco_rle(masks_to_rle(torch.as_tensor(np.asarray(mask, dtype=bool))[None])[0])


def stability_score(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """IoU between the masks thresholded at threshold +- offset: (..., H, W) -> (...)."""
    inter = (logits > (threshold + offset)).sum(-1, dtype=torch.int32).sum(-1, dtype=torch.int32)
    union = (logits > (threshold - offset)).sum(-1, dtype=torch.int32).sum(-1, dtype=torch.int32)
    return inter / union
