"""`Predictor`: the interface both engines implement (the torch `SamPredictor` and the ONNX
Runtime `OnnxSamPredictor`); code that takes "a predictor" types it with `Predictor` and calls
its methods, instead of asking which engine it got. No torch at run time: the ONNX predictor
must import without it.
"""

from typing import TYPE_CHECKING, Any, Optional, Protocol, Tuple, runtime_checkable

import numpy as np

from .transforms import ResizeLongestSide

if TYPE_CHECKING:
    import torch


@runtime_checkable
class Predictor(Protocol):
    """What both predictors offer (segment-anything's `SamPredictor` API plus `predict_boxes`).

    Prompts of `predict` are in original-image pixels, those of `predict_torch` in the resized
    1024 frame (`transform.apply_coords_torch` / `apply_boxes_torch`). `model` has at least
    `mask_threshold`, `image_format`, `img_size` and `device`.
    """

    transform: ResizeLongestSide
    original_size: Optional[Tuple[int, int]]
    input_size: Optional[Tuple[int, int]]
    is_image_set: bool
    features: Any

    @property
    def model(self) -> Any: ...

    @property
    def device(self) -> "torch.device": ...

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None: ...

    def reset_image(self) -> None: ...

    def get_image_embedding(self) -> Any: ...

    def predict(
        self,
        point_coords: Optional[np.ndarray] = None,
        point_labels: Optional[np.ndarray] = None,
        box: Optional[np.ndarray] = None,
        mask_input: Optional[np.ndarray] = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]: ...

    def predict_torch(
        self,
        point_coords: Optional["torch.Tensor"],
        point_labels: Optional["torch.Tensor"],
        boxes: Optional["torch.Tensor"] = None,
        mask_input: Optional["torch.Tensor"] = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> Tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]: ...

    def predict_boxes(
        self, boxes: np.ndarray, return_logits: bool = False, batch_size: int = 16, low_res_only: bool = False
    ) -> Tuple[Optional[np.ndarray], np.ndarray, np.ndarray]: ...


class ImageState:
    """Per-image state shared by both predictors: the embedding and the two image sizes."""

    def _require_image(self) -> None:
        if not self.is_image_set:
            raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")

    def get_image_embedding(self):
        """The (1, 256, 64, 64) embedding of the current image."""
        self._require_image()
        return self.features

    def reset_image(self) -> None:
        self.is_image_set = False
        self.features = None
        self.original_size = None
        self.input_size = None
