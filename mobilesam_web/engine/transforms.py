"""Image and coordinate transforms for SAM's longest-side-1024 frame, and YOLO's letterbox."""

from copy import deepcopy
from typing import TYPE_CHECKING, Tuple

import numpy as np
from PIL import Image

if TYPE_CHECKING:  # the torch methods get tensors; the numpy ones (the ONNX engine's) need no torch
    import torch


def get_preprocess_shape(oldh: int, oldw: int, long_side_length: int) -> Tuple[int, int]:
    """(h, w) after scaling the longest side to `long_side_length` (rounded half up)."""
    scale = long_side_length * 1.0 / max(oldh, oldw)
    return int(oldh * scale + 0.5), int(oldw * scale + 0.5)


class ResizeLongestSide:
    """Resizes images to a longest side of `target_length` and maps prompts to that frame.

    The image resize is PIL's bilinear filter on the uint8 image (antialiased when shrinking),
    which is what the official code does; torch's bilinear interpolation gives different pixels.
    """

    def __init__(self, target_length: int = 1024) -> None:
        self.target_length = target_length

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (h, w, 3) uint8 with max(h, w) == target_length."""
        h, w = get_preprocess_shape(image.shape[0], image.shape[1], self.target_length)
        if (h, w) == image.shape[:2]:
            return np.array(image)
        return np.array(Image.fromarray(np.ascontiguousarray(image)).resize((w, h), Image.BILINEAR))

    def apply_coords(self, coords: np.ndarray, original_size: Tuple[int, ...]) -> np.ndarray:
        """(..., 2) xy in original pixels -> float64 xy in the resized frame."""
        old_h, old_w = original_size
        new_h, new_w = get_preprocess_shape(old_h, old_w, self.target_length)
        coords = deepcopy(coords).astype(float)
        coords[..., 0] = coords[..., 0] * (new_w / old_w)
        coords[..., 1] = coords[..., 1] * (new_h / old_h)
        return coords

    def apply_boxes(self, boxes: np.ndarray, original_size: Tuple[int, ...]) -> np.ndarray:
        """(..., 4) xyxy -> (N, 4) in the resized frame."""
        return self.apply_coords(boxes.reshape(-1, 2, 2), original_size).reshape(-1, 4)

    def apply_coords_torch(self, coords: "torch.Tensor", original_size: Tuple[int, ...]) -> "torch.Tensor":
        old_h, old_w = original_size
        new_h, new_w = get_preprocess_shape(old_h, old_w, self.target_length)
        coords = coords.clone().float()
        coords[..., 0] = coords[..., 0] * (new_w / old_w)
        coords[..., 1] = coords[..., 1] * (new_h / old_h)
        return coords

    def apply_boxes_torch(self, boxes: "torch.Tensor", original_size: Tuple[int, ...]) -> "torch.Tensor":
        return self.apply_coords_torch(boxes.reshape(-1, 2, 2), original_size).reshape(-1, 4)
