"""SamPredictor: encode an image once, then decode masks from prompts (segment-anything API),
the torch engine's `Predictor` (interface.py)."""

from typing import Optional, Tuple

import numpy as np
import torch

from ..data.validation import check_image, check_prompts
from .interface import ImageState
from .modeling import Sam
from .transforms import ResizeLongestSide


class SamPredictor(ImageState):
    """Drop-in for segment-anything's `SamPredictor` (plus `predict_boxes`, `set_embedding`).

    Per-image state (`features`, `original_size`, `input_size`) lives on this instance, so one
    instance must serve one user's image at a time.
    """

    def __init__(self, sam_model: Sam) -> None:
        self.model = sam_model
        self.transform = ResizeLongestSide(sam_model.img_size)
        self.reset_image()

    @property
    def device(self) -> torch.device:
        return self.model.device

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Encode an (H, W, 3) uint8 image (RGB unless image_format="BGR")."""
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        image = check_image(image)
        if image_format != self.model.image_format:
            image = np.ascontiguousarray(image[..., ::-1])
        input_image = self.transform.apply_image(image)
        input_torch = torch.as_tensor(input_image, device=self.device).permute(2, 0, 1).contiguous()[None]
        self.set_torch_image(input_torch, image.shape[:2])

    @torch.no_grad()
    def set_torch_image(self, transformed_image: torch.Tensor, original_image_size: Tuple[int, ...]) -> None:
        """Encode a (1, 3, h, w) image already resized so that max(h, w) == 1024."""
        if (
            transformed_image.ndim != 4
            or transformed_image.shape[1] != 3
            or max(transformed_image.shape[2:]) != self.model.img_size
        ):
            raise ValueError(
                f"set_torch_image expects a (1, 3, h, w) tensor with longest side "
                f"{self.model.img_size}, got {tuple(transformed_image.shape)}"
            )
        self.reset_image()
        self.original_size = tuple(int(s) for s in original_image_size)
        self.input_size = tuple(int(s) for s in transformed_image.shape[-2:])
        x = self.model.preprocess(transformed_image.to(torch.float32))
        self.features = self.model.image_encoder(x)
        self.is_image_set = True

    def set_embedding(self, features: torch.Tensor, original_size: Tuple[int, int]) -> None:
        """Reuse an embedding computed earlier (e.g. from a cache) for `original_size` (H, W)."""
        from .transforms import get_preprocess_shape

        self.reset_image()
        self.features = torch.as_tensor(features, dtype=torch.float32, device=self.device)
        self.original_size = (int(original_size[0]), int(original_size[1]))
        self.input_size = get_preprocess_shape(*self.original_size, self.model.img_size)
        self.is_image_set = True

    def predict(
        self,
        point_coords: Optional[np.ndarray] = None,
        point_labels: Optional[np.ndarray] = None,
        box: Optional[np.ndarray] = None,
        mask_input: Optional[np.ndarray] = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Prompts in original-image pixels. Returns masks (C, H, W) bool (float logits with
        return_logits), iou_predictions (C,) and low-res logits (C, 256, 256); C is 3 with
        multimask_output else 1."""
        self._require_image()
        point_coords, point_labels, box, mask_input = check_prompts(point_coords, point_labels, box, mask_input)
        coords_t = labels_t = box_t = mask_t = None
        if point_coords is not None:
            coords = self.transform.apply_coords(point_coords, self.original_size)
            coords_t = torch.as_tensor(coords, dtype=torch.float, device=self.device)[None]
            labels_t = torch.as_tensor(point_labels, dtype=torch.int, device=self.device)[None]
        if box is not None:
            box_t = torch.as_tensor(
                self.transform.apply_boxes(box, self.original_size), dtype=torch.float, device=self.device
            )
        if mask_input is not None:
            mask_t = torch.as_tensor(mask_input, dtype=torch.float, device=self.device)[None]
        masks, iou, low_res = self.predict_torch(coords_t, labels_t, box_t, mask_t, multimask_output, return_logits)
        return masks[0].cpu().numpy(), iou[0].cpu().numpy(), low_res[0].cpu().numpy()

    @torch.no_grad()
    def predict_torch(
        self,
        point_coords: Optional[torch.Tensor],
        point_labels: Optional[torch.Tensor],
        boxes: Optional[torch.Tensor] = None,
        mask_input: Optional[torch.Tensor] = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Batched prompts already in the 1024 input frame (see `transform.apply_*_torch`):
        point_coords (B, N, 2), point_labels (B, N), boxes (B, 4), mask_input (B, 1, 256, 256).
        Returns masks (B, C, H, W), iou_predictions (B, C), low-res logits (B, C, 256, 256)."""
        low_res, iou = self._decode(point_coords, point_labels, boxes, mask_input, multimask_output)
        masks = self.model.postprocess_masks(low_res, self.input_size, self.original_size)
        if not return_logits:
            masks = masks > self.model.mask_threshold
        return masks, iou, low_res

    @torch.no_grad()
    def _decode(
        self, point_coords, point_labels, boxes, mask_input, multimask_output: bool
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """predict_torch without the full-resolution masks: (low-res logits, iou)."""
        self._require_image()
        if (point_coords is None) != (point_labels is None):
            raise ValueError("point_coords and point_labels must be given together")
        if boxes is not None and (boxes.ndim not in (2, 3) or boxes.shape[-1] != 4):
            raise ValueError(f"boxes must have shape (B, 4), got {tuple(boxes.shape)}")
        points = (point_coords, point_labels) if point_coords is not None else None
        sparse, dense = self.model.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
        low_res, iou = self.model.mask_decoder(
            image_embeddings=self.features,
            image_pe=self.model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
        )
        return low_res, iou

    def predict_boxes(
        self, boxes: np.ndarray, return_logits: bool = False, batch_size: int = 16, low_res_only: bool = False
    ) -> Tuple[Optional[np.ndarray], np.ndarray, np.ndarray]:
        """Boxes (B, 4) xyxy in original pixels -> masks (B, 1, H, W), iou (B, 1), low-res
        logits (B, 1, 256, 256) as numpy, one mask each (multimask_output=False), decoded in
        chunks of `batch_size`. With low_res_only the full-resolution masks are None.
        (The same call as `OnnxSamPredictor.predict_boxes`.)"""
        self._require_image()
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        if not np.all(np.isfinite(boxes)):
            raise ValueError("boxes contain NaN or infinite values")
        lows, ious = [], []
        for s in range(0, len(boxes), max(1, batch_size)):
            bt = self.transform.apply_boxes_torch(
                torch.as_tensor(boxes[s : s + batch_size], device=self.device), self.original_size
            )
            low, iou = self._decode(None, None, bt, None, multimask_output=False)
            lows.append(low.cpu())
            ious.append(iou.cpu())
        if not lows:
            low_t, iou_t = torch.zeros((0, 1, 256, 256)), torch.zeros((0, 1))
        else:
            low_t, iou_t = torch.cat(lows), torch.cat(ious)
        masks = None
        if not low_res_only:
            with torch.no_grad():
                full = self.model.postprocess_masks(low_t.to(self.device), self.input_size, self.original_size)
            masks = (full if return_logits else full > self.model.mask_threshold).cpu().numpy()
        return masks, iou_t.numpy(), low_t.numpy()
