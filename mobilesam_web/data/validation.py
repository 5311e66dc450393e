"""Input checks shared by the predictors: each failure raises ValueError with a clear message."""

from typing import Optional, Tuple

import numpy as np


def check_image(image: np.ndarray) -> np.ndarray:
    """Return `image` as a contiguous (H, W, 3) uint8 array or raise ValueError."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array of shape (H, W, 3), got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"image must have shape (H, W, 3) (RGB), got {image.shape}; convert grayscale or RGBA images to RGB first"
        )
    if image.dtype != np.uint8:
        raise ValueError(
            f"image must be uint8 (0..255), got {image.dtype}; e.g. use np.clip(x, 0, 255).astype(np.uint8)"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image is empty: shape {image.shape}")
    return np.ascontiguousarray(image)


def _finite(name: str, arr: np.ndarray) -> None:
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")


def check_prompts(
    point_coords: Optional[np.ndarray],
    point_labels: Optional[np.ndarray],
    box: Optional[np.ndarray],
    mask_input: Optional[np.ndarray],
) -> Tuple[Optional[np.ndarray], Optional[np.ndarray], Optional[np.ndarray], Optional[np.ndarray]]:
    """Validate numpy prompts of `SamPredictor.predict`; return them as float/int arrays."""
    if point_coords is not None:
        if point_labels is None:
            raise ValueError("point_labels must be given with point_coords (1 = positive, 0 = negative)")
        point_coords = np.asarray(point_coords, dtype=np.float64)
        point_labels = np.asarray(point_labels)
        if point_coords.ndim != 2 or point_coords.shape[1] != 2 or point_coords.shape[0] == 0:
            raise ValueError(f"point_coords must have shape (N, 2) with N >= 1, got {point_coords.shape}")
        if point_labels.shape != (point_coords.shape[0],):
            raise ValueError(
                f"point_labels must have shape ({point_coords.shape[0]},) to match point_coords, "
                f"got {point_labels.shape}"
            )
        _finite("point_coords", point_coords)
        if not np.all(np.isin(point_labels, (0, 1))):
            raise ValueError(
                f"point_labels must be 0 (negative) or 1 (positive), got {np.unique(point_labels).tolist()}"
            )
        point_labels = point_labels.astype(np.int32)
    elif point_labels is not None:
        raise ValueError("point_labels were given without point_coords")
    if box is not None:
        box = np.asarray(box, dtype=np.float64)
        if box.size != 4:
            raise ValueError(f"box must be 4 numbers x1, y1, x2, y2, got shape {box.shape}")
        box = box.reshape(4)
        _finite("box", box)
        if box[2] < box[0] or box[3] < box[1]:
            raise ValueError(f"box must be x1, y1, x2, y2 with x2 >= x1 and y2 >= y1, got {box.tolist()}")
    if mask_input is not None:
        mask_input = np.asarray(mask_input, dtype=np.float32)
        if mask_input.shape != (1, 256, 256):
            raise ValueError(
                f"mask_input must be low-res logits of shape (1, 256, 256) (a low_res_masks output), "
                f"got {mask_input.shape}"
            )
        _finite("mask_input", mask_input)
    return point_coords, point_labels, box, mask_input
